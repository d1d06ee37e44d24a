"""A face topology with its UV layout: template mesh, UV rasterisation, landmark embedding and UV region masks.

Every UV map of one topology is pixel-aligned with every other: that is what makes the maps a dataset. A
``Topology`` holds what the unwrap and complete stages need, computed by our code from the mesh and cached on
disk (keyed by a hash of the source and of ``CACHE_VERSION``):

- the UV rasterisation at ``uv_size`` (FFHQ-UV: 1024): per texel the mesh triangle and its barycentrics
  (FFHQ-UV's ``unwrap_1024_info.mat``);
- the landmark embedding: where mediapipe's 468 face-mesh landmarks lie on the surface (triangle + barycentric);
- float32 (S, S) region masks in [0,1] named like FFHQ-UV's ``topo_assets`` PNGs (``MASK_NAMES``), drawn from
  the embedded landmarks (eyes, mouth, nose, face oval) and from the template's normals (per-view validity); the
  hair region from an outline read off a finished map of the layout where the topology has one (hifi3dpp), else
  from the geometry;
- ``fill_regions``, the UV boxes the Poisson fill solves: FFHQ-UV's fixed boxes for ``hifi3dpp``, boxes around
  the eye, nose-base and mouth masks for other topologies.

Template frame: x to the image right of a frontal photo, y up, z towards the camera. UV: (u, v) in [0,1] with v
up; texel (row r, col c) is at u = (c + 0.5) / S, v = 1 - (r + 0.5) / S (see ``rasterize.uv_to_texel``). The
topology is chosen by ``topologies.load_topology`` (``hifi3dpp.py``, ``mediapipe468.py``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.geometry.rasterize import Raster, rasterize_uv
from stages.run_settings import TOPOLOGY_NAMES
from stages.views import VIEW_NAMES, VIEW_YAWS

TOPOLOGIES: tuple[str, ...] = TOPOLOGY_NAMES
UV_SIZE = 1024  # FFHQ-UV's UV resolution
CACHE_VERSION = "uv-topology-5"  # bump when the derived products change
DEFAULT_CACHE_DIR = Path(os.environ.get("FFHQUV_CACHE_DIR", Path.home() / ".cache" / "ffhq-uv-rebuild")) / "topology"

MASK_NAMES: tuple[str, ...] = (
    "unwrap_mask", "center_face", "hair", "mouth_contrast", "nosal_base", "nostril", "eye_l", "eye_r", "mouth",
    "major_valid_front", "major_valid_left", "major_valid_right", "major_valid_whole",
    "minor_valid_front", "minor_valid_left", "minor_valid_right", "minor_valid_whole", "minor_valid_alone",
)
# ``minor_valid_alone`` is ours, not FFHQ-UV's: the minor region of a lone front view (a photo), which has no side
# views to leave the jaw and temples to (up to MINOR_COS); FFHQ-UV's ``minor_valid_front`` when its masks are used.
# Camera yaw of each FFHQ-UV view (``stages.views.VIEW_YAWS``, degrees): positive = the camera moves towards the
# image-left side of the face. FFHQ-UV's "left" view (StyleFlow yaw +30) shows the image-left cheek
# (ffhq_uv_example/edit/01223_left.png).

# Mediapipe face-mesh landmark groups used to draw masks. Image-left = the subject's right.
# Nostril openings and the nose base were picked on a labelled render of the HiFi3D++ teaser head.
NOSTRIL_IMAGE_LEFT = (79, 239, 238, 241, 242, 60, 75, 59, 166)
NOSTRIL_IMAGE_RIGHT = (309, 459, 458, 461, 462, 290, 305, 289, 392)
NOSAL_BASE = (64, 219, 218, 237, 44, 1, 274, 457, 438, 439, 294, 327, 326, 2, 97, 98)
BROW_TOP = (105, 334)  # upper eyebrow points: the scalp (hair mask) starts above them
EAR_FRONT = (234, 454)  # face-oval points in front of the ears
NOSE_TIP, CHIN = 1, 152
# mediapipe's FACEMESH_FACE_OVAL contour points (face_mesh_connections.py), kept here so that the fitting code
# does not import mediapipe.
FACE_OVAL_LANDMARKS = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
                       152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
OUTER_EYE_IMAGE_LEFT, OUTER_EYE_IMAGE_RIGHT = 33, 263
# Mask sizes relative to the outer-eye-corner distance in UV (so they scale with the layout).
EYE_PAD = 0.06  # eye masks grow by this much around the eyelid contour
MOUTH_PAD = 0.04  # mouth mask grows around the inner lip contour
MOUTH_CONTRAST_PAD = 0.12  # FFHQ-UV's mouth_constract_mask: lips and their surroundings
NOSTRIL_PAD = 0.03
FACE_OVAL_HAIR_MARGIN = 0.15  # the hair mask keeps this far from the face oval
EAR_HAIR_DEPTH = 0.3  # hair starts this far (3D, in outer-eye-corner distances) behind the ear-front points
CHIN_MARGIN = 0.1  # per-view masks stop this far (3D, same unit) below the chin
FILL_BOX_PAD = 0.05  # padding of the Poisson boxes around the masks (non-hifi3dpp topologies)
EYE_FILL_BOXES = ("l_eye", "r_eye")  # the fill boxes of the eyes (FFHQ-UV's names, every topology)
# Per-view validity from the template normal n and the view direction d: "minor" where n.d exceeds
# MINOR_COS (the view sees the surface at all, up to ~75 deg), "major" where it exceeds MAJOR_COS and
# the view is the best of the three (front: MAJOR_COS_FRONT, since FFHQ-UV merges the front view last).
# The front view's minor region stops at MINOR_COS_FRONT (60 deg): merged last, it takes 80 % of every texel of
# its minor region (masks.major_minor_weight), so a wider one paints its grazing, shaded view of the jaw and temples
# over the side views, which see them squarely. Narrower still costs texels only the front sees (under the jaw line,
# the upper forehead): on FFHQ-UV's views of 01223, 75 / 60 / 53 deg give merged valid ratio 0.920 / 0.915 / 0.905,
# BS error 6.8 / 6.4 / 6.2, UV-left minus UV-right jaw luma -8.5 / -7.4 / -7.1.
MINOR_COS = 0.25
MINOR_COS_FRONT = 0.5
MAJOR_COS = 0.5
MAJOR_COS_FRONT = 0.7


@dataclass(frozen=True)
class FillRegion:
    """A UV box for the Poisson fill: rows [top, bottom), cols [left, right) in texels."""

    name: str
    top: int
    bottom: int
    left: int
    right: int


@dataclass(frozen=True)
class LandmarkEmbedding:
    """Surface points of the detector's landmarks: ``triangles`` (L,) int, ``barycentrics`` (L, 3) float."""

    triangles: np.ndarray
    barycentrics: np.ndarray

    @property
    def on_vertices(self) -> bool:
        """True if every landmark is exactly a mesh vertex (one-hot barycentrics)."""
        return bool(np.all(np.isclose(self.barycentrics.max(axis=1), 1.0)))

    def points(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(L, 3) landmark positions on a mesh with these (N, 3) vertices and (M, 3) faces."""
        corners = vertices[faces[self.triangles]]  # (L, 3, 3)
        return np.einsum("lk,lkc->lc", self.barycentrics, corners)


@dataclass
class Topology:
    """A template head/face mesh with per-corner UVs and its cached UV products (see the module docstring)."""

    name: str
    vertices: np.ndarray  # (N, 3) float64 template, x right, y up, z towards the camera
    triangles: np.ndarray  # (M, 3) int64, outward-facing (counter-clockwise seen from outside)
    uvs: np.ndarray  # (K, 2) float64 in [0,1], v up
    face_uvs: np.ndarray  # (M, 3) int64 into uvs
    landmarks: LandmarkEmbedding  # mediapipe's 468 points
    uv_size: int = UV_SIZE
    fixed_fill_regions: tuple[FillRegion, ...] | None = None  # hifi3dpp: FFHQ-UV's boxes
    # Optional 3DMM (official topo_assets): (3N, K) identity and expression bases on vertices.
    id_basis: np.ndarray | None = None
    exp_basis: np.ndarray | None = None
    cache_dir: Path | None = DEFAULT_CACHE_DIR
    # FFHQ-UV's official mask PNGs (topo_assets), which replace the drawn masks of the same meaning when present.
    official_masks_dir: str | Path | None = None  # a folder or an fsspec URL
    # (K, 2) outline (x = column, y = row, texels of a UV_SIZE map) of the hair region read from a finished map of
    # this layout (hifi3dpp: ``make_hifi3dpp_hair.py``); None = the hair region is drawn from the geometry.
    hair_outline: np.ndarray | None = None
    _raster: Raster | None = field(default=None, repr=False)
    _masks: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _texels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _texel_matrix: object | None = field(default=None, repr=False)  # scipy CSR (P, N), see texel_interpolate

    @property
    def source_hash(self) -> str:
        """Hash of everything the cached products derive from."""
        digest = hashlib.sha256(CACHE_VERSION.encode())
        for array in (self.vertices, self.triangles, self.uvs, self.face_uvs,
                      self.landmarks.triangles, self.landmarks.barycentrics,
                      np.zeros(0) if self.hair_outline is None else self.hair_outline):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        digest.update(f"{self.name}:{self.uv_size}:{self.official_masks_dir}".encode())
        return digest.hexdigest()[:16]

    def landmark_points(self, vertices: np.ndarray | None = None) -> np.ndarray:
        """(468, 3) landmark positions on the template or on deformed ``vertices`` (N, 3)."""
        return self.landmarks.points(self.vertices if vertices is None else vertices, self.triangles)

    def landmark_uv(self) -> np.ndarray:
        """(468, 2) texel positions (x = column, y = row) of the landmarks in the UV map."""
        from stages.geometry.rasterize import uv_to_texel

        corner_uv = self.uvs[self.face_uvs[self.landmarks.triangles]]  # (L, 3, 2)
        return uv_to_texel(np.einsum("lk,lkc->lc", self.landmarks.barycentrics, corner_uv), self.uv_size)

    def vertex_normals(self, vertices: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) unit vertex normals (area-weighted face normals) of the template or of ``vertices``."""
        v = self.vertices if vertices is None else vertices
        a, b, c = (v[self.triangles[:, k]] for k in range(3))
        face_n = np.cross(b - a, c - a)
        normals = np.zeros_like(v)
        for k in range(3):
            np.add.at(normals, self.triangles[:, k], face_n)
        return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)

    def uv_raster(self) -> Raster:
        """Per-texel triangle id and barycentrics of the (S, S) UV map (cached)."""
        if self._raster is None:
            self._load_or_build()
        return self._raster

    def masks(self) -> dict[str, np.ndarray]:
        """``MASK_NAMES`` -> (S, S) float32 masks in [0,1] (cached)."""
        if self._masks is None:
            self._load_or_build()
        return self._masks

    def texel_samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Covered texels: flat indices (P,) into S*S, their vertex ids (P, 3) and barycentrics (P, 3) (cached)."""
        if self._texels is None:
            raster = self.uv_raster()
            flat = np.flatnonzero(raster.triangle_id.ravel() >= 0)
            tri = raster.triangle_id.ravel()[flat]
            self._texels = (flat, self.triangles[tri], raster.barycentrics.reshape(-1, 3)[flat].astype(np.float64))
        return self._texels

    def texel_interpolate(self, values: np.ndarray) -> np.ndarray:
        """Per-vertex (N, C) values -> (P, C) at the covered texels of ``texel_samples`` (barycentric blend)."""
        if self._texel_matrix is None:
            from scipy.sparse import csr_matrix

            # Three barycentric weights per texel row: one sparse product replaces three (P, C) gathers, which
            # cost ten times more at 1024 (about 1M texels, called per view for positions and visibility).
            _, vids, bary = self.texel_samples()
            rows = np.arange(0, 3 * len(vids) + 1, 3)
            self._texel_matrix = csr_matrix((bary.ravel(), vids.ravel(), rows), shape=(len(vids), len(self.vertices)))
        return np.asarray(self._texel_matrix @ np.asarray(values, dtype=np.float64))

    def fill_regions(self) -> tuple[FillRegion, ...]:
        """The Poisson-fill boxes: FFHQ-UV's fixed boxes on hifi3dpp, else boxes around the region masks."""
        if self.fixed_fill_regions is not None:
            return self.fixed_fill_regions
        masks = self.masks()
        pad = int(round(FILL_BOX_PAD * self._eye_distance_texels()))
        regions = []
        for name, mask_name in (("l_eye", "eye_l"), ("r_eye", "eye_r"), ("nosal_base", "nosal_base"),
                                ("mouth", "mouth")):
            rows, cols = np.nonzero(masks[mask_name] > 0.5)
            if len(rows) == 0:
                continue
            s = self.uv_size
            regions.append(FillRegion(name, max(0, rows.min() - pad), min(s, rows.max() + 1 + pad),
                                      max(0, cols.min() - pad), min(s, cols.max() + 1 + pad)))
        return tuple(regions)

    def _eye_distance_texels(self) -> float:
        lm = self.landmark_uv()
        return float(np.linalg.norm(lm[OUTER_EYE_IMAGE_RIGHT] - lm[OUTER_EYE_IMAGE_LEFT]))

    def _cache_file(self) -> Path | None:
        return None if self.cache_dir is None else Path(self.cache_dir) / f"{self.name}-{self.source_hash}.npz"

    def _load_or_build(self) -> None:
        path = self._cache_file()
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    self._raster = Raster(data["triangle_id"], data["barycentrics"],
                                          np.where(data["triangle_id"] >= 0, 0.0, np.inf).astype(np.float32))
                    self._masks = {name: data[f"mask_{name}"].astype(np.float32) / 255.0 for name in MASK_NAMES}
                return
            except (OSError, KeyError, ValueError):
                pass  # a partial or stale cache file is rebuilt below
        self._raster = rasterize_uv(self.uvs, self.face_uvs, self.uv_size)
        self._masks = build_masks(self)
        if self.official_masks_dir is not None:
            official = read_official_masks(self.official_masks_dir, self.uv_size)
            if "minor_valid_front" in official:
                official.setdefault("minor_valid_alone", official["minor_valid_front"])
            self._masks.update(official)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez_compressed(
                tmp, triangle_id=self._raster.triangle_id, barycentrics=self._raster.barycentrics,
                **{f"mask_{n}": np.round(m * 255).astype(np.uint8) for n, m in self._masks.items()})
            os.replace(tmp, path)  # atomic: concurrent actors never read a half-written cache


# Our mask names -> FFHQ-UV's topo_assets file names (pipeline.md section 3; "constract" is their spelling).
OFFICIAL_MASK_FILES: dict[str, str] = {
    "unwrap_mask": "unwrap_1024_info_mask.png", "center_face": "center_face_mask.png", "hair": "hair_mask.png",
    "mouth_contrast": "mouth_constract_mask.png", "nosal_base": "nosal_base_mask.png", "nostril": "nostril_mask.png",
    **{f"{kind}_valid_{view}": f"{kind}_valid_{view}_mask.png"
       for kind in ("major", "minor") for view in ("front", "left", "right", "whole")},
}


def read_official_masks(folder: str | Path, size: int) -> dict[str, np.ndarray]:
    """The FFHQ-UV mask PNGs found in ``folder`` (a local folder or an fsspec URL), as (S, S) float32 in [0,1]
    (resized to S if needed). Read once, when the topology's cache is built."""
    import cv2
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(folder))
    masks = {}
    for name, filename in OFFICIAL_MASK_FILES.items():
        path = f"{root.rstrip('/')}/{filename}"
        if not fs.exists(path):
            continue
        image = cv2.imdecode(np.frombuffer(fs.cat_file(path), dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"{folder}/{filename} is not a readable image")
        if image.shape != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        masks[name] = image.astype(np.float32) / 255.0
    return masks


def edge_loops(connections) -> list[list[int]]:
    """Ordered vertex loops of an edge list made of closed contours (mediapipe connection sets, mesh borders)."""
    adjacency: dict[int, list[int]] = {}
    for a, b in connections:
        adjacency.setdefault(a, []).append(b)
        adjacency.setdefault(b, []).append(a)
    loops, seen = [], set()
    for start in sorted(adjacency):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [v for v in adjacency[cur] if v != prev and v not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return loops


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def outline_mask(outline: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool inside a (K, 2) texel outline (x, y)."""
    import cv2

    canvas = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(np.asarray(outline) * 16).astype(np.int32)], 1, shift=4)
    return canvas.astype(bool)


def build_masks(topology: Topology) -> dict[str, np.ndarray]:
    """Draw the ``MASK_NAMES`` masks of a topology from its landmark embedding and template normals."""
    import cv2
    from mediapipe.python.solutions import face_mesh_connections as fmc

    s = topology.uv_size
    covered = topology.uv_raster().triangle_id >= 0
    lm = topology.landmark_uv()  # (468, 2) texel x, y
    eye_dist = topology._eye_distance_texels()

    def polygon(indices, pad: float = 0.0) -> np.ndarray:
        canvas = np.zeros((s, s), dtype=np.uint8)
        pts = np.round(lm[list(indices)] * 16).astype(np.int32)  # 4 fractional bits for sub-texel accuracy
        cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=4)
        radius = int(round(pad * eye_dist))
        if radius > 0:
            canvas = cv2.dilate(canvas, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
        return canvas.astype(bool)

    def hull(indices, pad: float = 0.0) -> np.ndarray:
        pts = lm[list(indices)]
        order = cv2.convexHull(np.round(pts * 16).astype(np.int32), returnPoints=False).ravel()
        return polygon([list(indices)[i] for i in order], pad)

    lips = sorted(edge_loops(fmc.FACEMESH_LIPS), key=lambda loop: polygon_area(lm[loop]))
    inner_lips, outer_lips = lips[0], lips[-1]
    oval = edge_loops(fmc.FACEMESH_FACE_OVAL)[0]
    # FACEMESH_LEFT_EYE is the subject's left eye: image-right, FFHQ-UV's l_eye box (cols 560:710).
    eye_l = polygon(edge_loops(fmc.FACEMESH_LEFT_EYE)[0], EYE_PAD)
    eye_r = polygon(edge_loops(fmc.FACEMESH_RIGHT_EYE)[0], EYE_PAD)
    masks: dict[str, np.ndarray] = {
        "unwrap_mask": covered,
        "center_face": polygon(oval) & covered,
        "eye_l": eye_l,
        "eye_r": eye_r,
        "mouth": polygon(inner_lips, MOUTH_PAD),
        "mouth_contrast": polygon(outer_lips, MOUTH_CONTRAST_PAD),
        "nostril": hull(NOSTRIL_IMAGE_LEFT, NOSTRIL_PAD) | hull(NOSTRIL_IMAGE_RIGHT, NOSTRIL_PAD),
        "nosal_base": hull(NOSAL_BASE),
    }

    position, normal = _texel_geometry(topology)  # for the hair and per-view masks

    lm3d = topology.landmark_points()
    eye_dist_3d = float(np.linalg.norm(lm3d[OUTER_EYE_IMAGE_RIGHT] - lm3d[OUTER_EYE_IMAGE_LEFT]))
    y, z = position[..., 1], position[..., 2]
    if topology.hair_outline is not None:  # read from a finished map of the layout: FFHQ-UV's own hairline
        masks["hair"] = covered & outline_mask(topology.hair_outline * (s / UV_SIZE), s)
    else:
        # Scalp: above the eyebrows, or behind the ears above the nose tip; never next to the face oval.
        near_face = polygon(oval, FACE_OVAL_HAIR_MARGIN)
        behind_ears = z < lm3d[list(EAR_FRONT), 2].mean() - EAR_HAIR_DEPTH * eye_dist_3d
        scalp = (y > lm3d[list(BROW_TOP), 1].mean()) | (behind_ears & (y > lm3d[NOSE_TIP, 1]))
        masks["hair"] = covered & scalp & ~near_face
    # Views are only trusted on the head, not on the neck below the chin.
    skin = covered & ~masks["hair"] & (y > lm3d[CHIN, 1] - CHIN_MARGIN * eye_dist_3d)
    masks.update(view_validity(skin, normal))
    return {name: masks[name].astype(np.float32) for name in MASK_NAMES}


def _texel_geometry(topology: Topology) -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) template position and unit normal at every texel (zero outside the layout)."""
    s = topology.uv_size
    flat = topology.texel_samples()[0]
    position = np.zeros((s * s, 3))
    position[flat] = topology.texel_interpolate(topology.vertices)
    normal = np.zeros((s * s, 3))
    normal[flat] = topology.texel_interpolate(topology.vertex_normals())
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return position.reshape(s, s, 3), normal.reshape(s, s, 3)


def view_validity(skin: np.ndarray, normal: np.ndarray) -> dict[str, np.ndarray]:
    """The ``major_valid_<view>`` / ``minor_valid_<view>`` / ``*_valid_whole`` masks: (S, S) bool skin texels
    that face each view's camera (``VIEW_YAWS``) enough; a side view's major region is where it faces best."""
    masks: dict[str, np.ndarray] = {}
    cos = {}
    for view, yaw in VIEW_YAWS.items():
        rad = np.deg2rad(yaw)
        direction = np.array([-np.sin(rad), 0.0, np.cos(rad)])  # towards the camera, in the template frame
        cos[view] = normal @ direction
    best = np.argmax(np.stack([cos[v] for v in VIEW_NAMES]), axis=0)
    for k, view in enumerate(VIEW_NAMES):
        threshold = MAJOR_COS_FRONT if view == "front" else MAJOR_COS
        major = skin & (cos[view] > threshold)
        if view != "front":
            major &= best == k
        masks[f"major_valid_{view}"] = major
        masks[f"minor_valid_{view}"] = skin & (cos[view] > (MINOR_COS_FRONT if view == "front" else MINOR_COS))
    masks["minor_valid_alone"] = skin & (cos["front"] > MINOR_COS)
    for kind in ("major", "minor"):
        masks[f"{kind}_valid_whole"] = np.logical_or.reduce([masks[f"{kind}_valid_{v}"] for v in VIEW_NAMES])
    return masks
