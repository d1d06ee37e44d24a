"""The ``hifi3dpp`` topology: HiFi3D++'s head mesh and UV layout, the layout of every FFHQ-UV map.

Sources, in order of preference:
1. FFHQ-UV's official ``topo_assets/hifi3dpp_model_info.mat`` under the weights folder (pipeline.md section 3):
   mean shape, the 3DMM identity (532) and expression (45) bases, ``head_tri`` / ``head_tri_vt`` / ``vt_list``;
2. any HiFi3D++ OBJ with UVs (``topology.obj``, e.g. ``../shared/data/hifi3dpp/head_teaser1.obj``, or
   ``topo_assets/hifi3dpp_mean_face.obj``): the template and UV layout, no 3DMM basis (fitting then deforms the
   template non-rigidly).
FFHQ-UV's mask PNGs in ``topo_assets/`` replace our drawn masks of the same meaning when present.
The landmark embedding comes from ``hifi3dpp_landmarks.json`` (``make_hifi3dpp_landmarks.py``), valid for every
mesh of this topology, and FFHQ-UV's hair region from ``hifi3dpp_hair.json`` (``make_hifi3dpp_hair.py``), so
nothing but the OBJ (or the .mat) is needed at run time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stages.base import configured_weights_dir
from stages.errors import ConfigError
from stages.geometry.uv_topology import (
    DEFAULT_CACHE_DIR,
    UV_SIZE,
    FillRegion,
    LandmarkEmbedding,
    Topology,
)
from stages.networks import local_weight_file, under_weights_dir, weight_exists

LANDMARK_FILE = Path(__file__).resolve().parent / "hifi3dpp_landmarks.json"
HAIR_FILE = Path(__file__).resolve().parent / "hifi3dpp_hair.json"  # FFHQ-UV's hair region (make_hifi3dpp_hair.py)
NUM_VERTICES = 20481  # HiFi3D++ head (pipeline.md section 3)
NUM_FACES = 40832
TOPO_ASSETS = "topo_assets"
MODEL_INFO = f"{TOPO_ASSETS}/hifi3dpp_model_info.mat"
MEAN_FACE_OBJ = f"{TOPO_ASSETS}/hifi3dpp_mean_face.obj"
# FFHQ-UV's fixed Poisson boxes in the 1024 UV map (rows, cols), pipeline.md 2.4(f) step 3.
FFHQ_UV_FILL_BOXES: tuple[FillRegion, ...] = (
    FillRegion("l_eye", 330, 400, 560, 710),
    FillRegion("r_eye", 330, 400, 310, 460),
    FillRegion("nosal_base", 465, 525, 440, 585),
    FillRegion("mouth", 555, 620, 410, 610),
)


def load_landmark_embedding(num_faces: int = NUM_FACES) -> LandmarkEmbedding:
    """The committed mediapipe-468 embedding on the HiFi3D++ head."""
    record = json.loads(LANDMARK_FILE.read_text(encoding="utf-8"))
    if record["num_faces"] != num_faces:
        raise ValueError(f"{LANDMARK_FILE.name} is for a mesh with {record['num_faces']} faces, not {num_faces}")
    return LandmarkEmbedding(np.asarray(record["triangles"], dtype=np.int64),
                             np.asarray(record["barycentrics"], dtype=np.float64))


def load_hair_outline() -> np.ndarray:
    """(K, 2) outline of FFHQ-UV's hair region in texels of a 1024 map (x = column, y = row)."""
    record = json.loads(HAIR_FILE.read_text(encoding="utf-8"))
    return np.asarray(record["outline"], dtype=np.float64) * (UV_SIZE / record["uv_size"])


def _scaled_boxes(uv_size: int) -> tuple[FillRegion, ...]:
    """FFHQ-UV's boxes at another UV resolution (they are defined at 1024)."""
    f = uv_size / UV_SIZE
    return tuple(FillRegion(b.name, round(b.top * f), round(b.bottom * f), round(b.left * f), round(b.right * f))
                 for b in FFHQ_UV_FILL_BOXES)


def load_hifi3dpp(obj_path: str | None = None, weights_dir: str | None = None,
                  cache_dir: str | Path | None = DEFAULT_CACHE_DIR, uv_size: int = UV_SIZE) -> Topology:
    """The hifi3dpp topology from the official model info (if present) or from a HiFi3D++ OBJ.

    ``weights_dir`` may be a local folder or an fsspec URL (``s3://...``): remote assets are copied once per node
    (``stages.networks.local_weight_file``), the official mask PNGs read through fsspec.
    """
    topology = None
    model_info = _asset(weights_dir, MODEL_INFO)
    if model_info is not None:
        topology = _from_model_info(Path(local_weight_file(model_info)), cache_dir, uv_size)
    candidates = [obj_path] if obj_path else []
    if weights_dir:
        candidates.append(under_weights_dir(weights_dir, MEAN_FACE_OBJ))
    for location in candidates:
        if topology is None and weight_exists(location):
            topology = _from_obj(Path(local_weight_file(location)), cache_dir, uv_size)
    if topology is not None:
        if weights_dir:
            # Official masks win over drawn ones; read_official_masks takes those present, once, when the topology's
            # cache is built (no existence checks on every load: on S3 each is a request).
            topology.official_masks_dir = under_weights_dir(weights_dir, TOPO_ASSETS)
        return topology
    tried = candidates + ([under_weights_dir(weights_dir, MODEL_INFO)] if weights_dir else [])
    raise ConfigError(f"the hifi3dpp topology needs a HiFi3D++ OBJ with UVs (topology.obj) or "
                      f"{MODEL_INFO} in models.weights_dir; tried {', '.join(tried) or 'nothing configured'}; "
                      "see README section 'Weights'")


def check_sources(config) -> None:
    """Preflight of the run's ``topology``: for hifi3dpp, its OBJ or model info must exist (no mesh loading)."""
    if config.topology.name != "hifi3dpp":
        return
    weights_dir = configured_weights_dir(config)
    candidates = [str(config.topology.obj)] if config.topology.obj else []
    if weights_dir:
        candidates += [under_weights_dir(weights_dir, MODEL_INFO), under_weights_dir(weights_dir, MEAN_FACE_OBJ)]
    if not any(weight_exists(location) for location in candidates):
        raise ConfigError("the hifi3dpp topology needs topology.obj (a HiFi3D++ OBJ with UVs) "
                          f"or models.weights_dir/{MODEL_INFO}; see README section 'Weights'")


def _asset(weights_dir: str | None, relative: str) -> str | None:
    """The location of ``relative`` under ``weights_dir`` when it exists there, else None."""
    if not weights_dir:
        return None
    location = under_weights_dir(weights_dir, relative)
    return location if weight_exists(location) else None


def _from_obj(path: Path, cache_dir, uv_size: int) -> Topology:
    from stages.geometry.obj import read_obj

    mesh = read_obj(path)
    if len(mesh.vertices) != NUM_VERTICES or len(mesh.faces) != NUM_FACES or not mesh.has_uvs:
        raise ConfigError(f"{path} is not a HiFi3D++ head with UVs ({len(mesh.vertices)} vertices, "
                          f"{len(mesh.faces)} faces; expected {NUM_VERTICES} and {NUM_FACES} with vt)")
    return Topology(name="hifi3dpp", vertices=mesh.vertices, triangles=mesh.faces, uvs=mesh.uvs,
                    face_uvs=mesh.face_uvs, landmarks=load_landmark_embedding(len(mesh.faces)), uv_size=uv_size,
                    fixed_fill_regions=_scaled_boxes(uv_size), hair_outline=load_hair_outline(),
                    cache_dir=None if cache_dir is None else Path(cache_dir))


def _from_model_info(path: Path, cache_dir, uv_size: int) -> Topology:
    """FFHQ-UV's ``hifi3dpp_model_info.mat``: 1-based triangles, (1, 3N) mean shape, (3N, K) bases."""
    from scipy.io import loadmat

    info = loadmat(str(path))
    try:
        mean = np.asarray(info["meanshape"], dtype=np.float64).reshape(-1, 3)
        triangles = np.asarray(info["head_tri"], dtype=np.int64) - 1
        face_uvs = np.asarray(info["head_tri_vt"], dtype=np.int64) - 1
        uvs = np.asarray(info["vt_list"], dtype=np.float64)
        id_basis = np.asarray(info["idBase"], dtype=np.float64)
        exp_basis = np.asarray(info["exBase"], dtype=np.float64)
    except KeyError as missing:
        raise ConfigError(f"{path} lacks key {missing}; see README section 'Weights'") from None
    # Deep3D re-centres the mean shape before use (pipeline.md 2.4(b)).
    mean = mean - mean.mean(axis=0)
    return Topology(name="hifi3dpp", vertices=mean, triangles=triangles, uvs=uvs, face_uvs=face_uvs,
                    landmarks=load_landmark_embedding(len(triangles)), uv_size=uv_size,
                    fixed_fill_regions=_scaled_boxes(uv_size), id_basis=id_basis, exp_basis=exp_basis,
                    hair_outline=load_hair_outline(),
                    cache_dir=None if cache_dir is None else Path(cache_dir))
