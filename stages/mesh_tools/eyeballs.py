"""Place FFHQ-UV's template eyeballs into the eye sockets of a HiFi3D++ head mesh (pipeline.md section 7).

The HiFi3D++ head has no eye holes, so the eye region is found from fixed vertex lists of the topology
(``stages/geometry/data/mesh_topology.json``). Procedure, per eye:

1. a similarity (SVD rotation, L1-ratio scale) maps the ball's 5 anchor vertices onto the head's 5 eye-bag vertices;
2. an iterative fit moves the 19 eyelid-contour vertices towards the ball's front half (nearest neighbours from a
   KD-tree) in small depth / height steps until the contour stops getting closer or sinks into the ball;
3. the ball is shifted by the opposite of the contour's accumulated motion.

The template balls are an input folder (``--eyeball-dir``): ``eyeLeft_mesh_move.obj``, ``eyeRight_mesh_move.obj``
and ``eye_ball_tex.png`` from csbhr/FFHQ-UV ``Mesh_Add_EyeBall/eye_ball_assets`` (research licence; not shipped).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stages.geometry.mesh_topology import (
    SIDES,
    TopologyError,
    eyeball_template,
    hifi3dpp_head,
    require_manifold,
    require_uvs,
    require_vertex_count,
)
from stages.geometry.obj import Mesh, read_obj, write_mtl, write_obj

# Template files of csbhr/FFHQ-UV Mesh_Add_EyeBall/eye_ball_assets, by side.
TEMPLATE_FILES: dict[str, str] = {"left": "eyeLeft_mesh_move.obj", "right": "eyeRight_mesh_move.obj"}
TEXTURE_FILE = "eye_ball_tex.png"
# Output names, as FFHQ-UV writes them.
OUTPUT_FILES: dict[str, str] = {"left": "L_ball.obj", "right": "R_ball.obj"}
MATERIAL_FILE = "eye_ball_tex.mtl"
MATERIAL_NAME = "eyeball"

# Constants of FFHQ-UV's fit (Mesh_Add_EyeBall/run_mesh_add_eyeball.py, opt_eye_position), in head units.
FIT_MAX_ITERATIONS = 100
FIT_NEIGHBOURS = 3  # nearest ball vertices per contour vertex; the distance sum is the fit's objective
FIT_CENTRAL_CONTOUR = 6  # the first 6 contour vertices (mid upper / lower lids) give the height and depth residuals
FIT_DEPTH_STEP = 0.0005  # contour z step per iteration
FIT_HEIGHT_STEP = 0.0002  # contour y step while the lids sit above the ball
FIT_HEIGHT_TOLERANCE = 1e-4  # summed y residual above which the contour keeps moving down
FIT_MIN_GAIN = 1e-3  # stop when the distance sum improves by less than this
FIT_MAX_SINK = 0.0025  # stop when a central contour vertex is this far behind its nearest ball vertex
FIT_EXTRA_DEPTH_STEPS = 2  # the ball moves forward by (contour steps + 2) depth steps
FIT_SINK_LIFT = 1.5  # the ball moves up by 1.5 x the deepest central z residual (FFHQ-UV's y correction)


@dataclass
class EyeballFit:
    """A placed eyeball and how the fit went."""

    side: str
    mesh: Mesh  # placed ball, outward vertex normals, material MATERIAL_NAME
    scale: float  # similarity scale from template to head
    iterations: int  # contour steps taken by the fit
    height_steps: int  # of which also moved the contour down


def load_templates(eyeball_dir: str | os.PathLike) -> dict[str, Mesh]:
    """Read and check the left/right template balls from ``eyeball_dir``; raise FileNotFoundError / TopologyError."""
    folder = Path(eyeball_dir)
    missing = [name for name in (*TEMPLATE_FILES.values(), TEXTURE_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"eyeball template folder {folder} lacks {', '.join(missing)}; get eye_ball_assets/ from "
            "csbhr/FFHQ-UV (Mesh_Add_EyeBall) and pass it with --eyeball-dir (see README section 'Mesh tools')"
        )
    expected = eyeball_template().num_vertices
    templates = {}
    for side, name in TEMPLATE_FILES.items():
        mesh = read_obj(folder / name)
        require_vertex_count(mesh, expected, "FFHQ-UV template eyeball", str(folder / name))
        require_uvs(mesh, str(folder / name))
        templates[side] = mesh
    return templates


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (scale, (3,3) rotation, (3,) translation) mapping (K,3) ``source`` points onto ``target``.

    Rotation from the SVD of the centred cross-covariance; scale as the ratio of L1 norms of the centred target
    and rotated source (FFHQ-UV's choice, less sensitive to one far point than a least-squares scale).
    """
    source_c = source - source.mean(axis=0)
    target_c = target - target.mean(axis=0)
    u, _, vt = np.linalg.svd(target_c.T @ source_c)
    # A reflection would mirror the ball; flip the weakest axis to keep a proper rotation.
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    scale = float(np.abs(target_c).sum() / np.abs(source_c @ rotation.T).sum())
    translation = (target - scale * source @ rotation.T).mean(axis=0)
    return scale, rotation, translation


def fit_to_eyelids(contour: np.ndarray, ball_front: np.ndarray) -> tuple[np.ndarray, int, int]:
    """FFHQ-UV's iterative eyelid fit: returns the ball offset (3,) in head units, contour steps and height steps.

    ``contour`` (19, 3) eyelid vertices, ``ball_front`` (F, 3) front-half vertices of the similarity-placed ball.
    The contour is stepped backwards (and down while the lids sit high) until it stops getting closer to the
    ball's front, or sinks behind it; the ball then moves by the opposite amount, plus FFHQ-UV's final corrections.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(ball_front)
    moving = contour.astype(np.float64).copy()
    last_distance = np.inf
    steps = height_steps = 0
    deepest = 0.0
    for _ in range(FIT_MAX_ITERATIONS):
        distances, nearest = tree.query(moving, k=FIT_NEIGHBOURS)
        distance = float(distances.sum())
        residual = moving - ball_front[nearest[:, 0]]
        central = residual[:FIT_CENTRAL_CONTOUR]
        height = float(central[:, 1].sum())
        deepest = float(central[:, 2].min())
        if last_distance - distance < FIT_MIN_GAIN or deepest < -FIT_MAX_SINK:
            break
        moving[:, 2] -= FIT_DEPTH_STEP
        steps += 1
        last_distance = distance
        if height > FIT_HEIGHT_TOLERANCE:
            moving[:, 1] -= FIT_HEIGHT_STEP
            height_steps += 1
    offset = np.array(
        [
            0.0,
            FIT_HEIGHT_STEP * height_steps - FIT_SINK_LIFT * deepest,
            FIT_DEPTH_STEP * (steps + FIT_EXTRA_DEPTH_STEPS),
        ]
    )
    return offset, steps, height_steps


def outward_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,3) unit area-weighted vertex normals of a closed mesh, oriented away from its centroid."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    # Orientation from the enclosed volume's sign, so a template wound either way gives outward normals.
    centred = corners - vertices.mean(axis=0)
    volume = np.einsum("ij,ij->i", centred[:, 0], np.cross(centred[:, 1], centred[:, 2])).sum()
    if volume < 0:
        normals = -normals
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(length, 1e-12)


def place_eyeballs(head: Mesh, templates: dict[str, Mesh], source: str = "head") -> dict[str, EyeballFit]:
    """Fit both template balls into a HiFi3D++ head; raise TopologyError if it is not one."""
    topo = hifi3dpp_head()
    require_vertex_count(head, topo.num_vertices, "HiFi3D++", source)
    require_manifold(head, source)
    ball_topo = eyeball_template()
    fits = {}
    for side in SIDES:
        template = templates[side]
        scale, rotation, translation = similarity_transform(
            template.vertices[ball_topo.anchor[side]], head.vertices[topo.eye_bag[side]]
        )
        placed = scale * template.vertices @ rotation.T + translation
        offset, iterations, height_steps = fit_to_eyelids(
            head.vertices[topo.eye_contour[side]], placed[ball_topo.front_half]
        )
        placed = placed + offset
        if not np.all(np.isfinite(placed)):
            raise TopologyError(f"{source}: eyeball fit for the {side} eye did not converge (degenerate eye region)")
        mesh = replace(
            template,
            vertices=placed,
            normals=outward_vertex_normals(placed, template.faces),
            face_normals=template.faces.copy(),
            colors=None,
            mtllib=MATERIAL_FILE,
            materials=(MATERIAL_NAME,),
            face_material=np.zeros(len(template.faces), dtype=np.int64),
        )
        fits[side] = EyeballFit(side=side, mesh=mesh, scale=scale, iterations=iterations, height_steps=height_steps)
    return fits


def add_eyeballs(
    head_path: str | os.PathLike, out_dir: str | os.PathLike, eyeball_dir: str | os.PathLike
) -> list[Path]:
    """Write L_ball.obj, R_ball.obj, their MTL and texture into ``out_dir``; returns the written paths."""
    templates = load_templates(eyeball_dir)
    head = read_obj(head_path)
    fits = place_eyeballs(head, templates, source=os.fspath(head_path))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for side, fit in fits.items():
        path = out / OUTPUT_FILES[side]
        write_obj(path, fit.mesh)
        written.append(path)
    write_mtl(out / MATERIAL_FILE, {MATERIAL_NAME: TEXTURE_FILE})
    shutil.copyfile(Path(eyeball_dir) / TEXTURE_FILE, out / TEXTURE_FILE)
    written += [out / MATERIAL_FILE, out / TEXTURE_FILE]
    return written
