"""The unwrap stage: fit the topology to every view of a sample and sample each view into the UV map.

FFHQ-UV step 4 (a)-(d) (pipeline.md 2.4): landmarks per view (mediapipe 468, or dlib 68 with ``landmarks: dlib``;
see ``landmark_region`` for the face region of a dlib fit), one shared identity shape and a
camera pose per view (``stages/geometry/fitting.py``), visibility by FFHQ-UV's normal test plus a z-buffer depth
test (``stages/geometry/visibility.py``), then bilinear sampling of the view at every texel's projected position.
The face region comes from FFHQ-UV's face parser (BiSeNet, ``stages/networks/bisenet.py``) when
``face_parser`` is set, otherwise from the landmarks (face oval, minus the eyes and the inside of the mouth, as
FFHQ-UV's parsing mask does). A single view (photo profile) borrows the mirror image of its visible side for
texels it cannot see, matched to its own texels where they meet (``match_mirror_to_seam``). Outputs ``uv_<view>``
(RGB, zero outside the mask) and ``uvmask_<view>`` (gray, 255 = valid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np
import pyarrow as pa

from stages.base import Sample, Stage, StageResult, StageSettings, configured_weights_dir
from stages.errors import ConfigError, SampleError
from stages.face.glasses import wears_glasses
from stages.face.landmarks import LandmarkBackend, MultiFacePolicy
from stages.face.region import disk, face_region, parsed_face_region
from stages.views import ANY_VIEW, VIEW_NAMES, current_views, view_key

NO_VIEWS = "no_views"  # the sample has no image to unwrap (no view_<v> / relit_<v> / aligned output)
FIT_FAILED = "fit_failed"  # the landmarks could not be fitted (degenerate pose)
MASK_OPEN_1024 = 6  # texels (at 1024) of the opening that clears spikes from a view's UV mask
# A single view's mirrored texels are matched to its own along the seam where they meet: the colour step is measured
# over this band of texels (at 1024) and its correction fades out over this distance from the seam.
MIRROR_SEAM_BAND_1024 = 12
MIRROR_SEAM_FADE_1024 = 48

Rasterizer = Literal["auto", "cpu", "nvdiffrast"]  # auto = nvdiffrast on cuda, else cpu

# File keys this stage writes, per view (``view_key(UV_VIEW, view)``), and the manifest field complete reads.
UV_VIEW = "uv_{view}"  # (S, S, 3) RGB unwrap of one view, zero outside its mask
UVMASK_VIEW = "uvmask_{view}"  # (S, S) gray, 255 = valid texel
LANDMARK_ERROR_VIEW = "unwrap_landmark_error_{view}"  # reprojection error, fraction of the face width
# A single view's symmetric fill leaves an eye's fill box alone when the view sees at least this share of its
# centre-face texels (``symmetric_fill``).
SEEN_EYE_BOX = 0.5
@dataclass
class UnwrapSettings(StageSettings):
    # The UV layout is the run-level ``topology`` section (stages.run_settings), shared with complete.
    rasterizer: Rasterizer = "auto"  # auto (nvdiffrast on cuda, else cpu) | cpu | nvdiffrast
    multiple_faces: MultiFacePolicy = "largest"  # largest | reject
    landmarks: LandmarkBackend = "mediapipe"  # landmarks fitted per view: mediapipe (468) | dlib (68, optional package)
    dlib_predictor: Optional[str] = None  # dlib's 68-point model, as stages.inversion.dlib_predictor
    exclude_eyes_mouth: bool = True  # drop eyes and mouth opening from the mask, like FFHQ-UV's parsing
    depth_test: bool = True  # z-buffer test on top of FFHQ-UV's normal test
    symmetric_fill: bool = True  # single view: fill unseen texels from the mirrored visible side
    # Landmark face region: follow the skin the view shows (per-sample skin colour model): up to the hairline and
    # ears, without hair strands, glasses or hands. False = the bare landmark face oval.
    skin_region: bool = True
    # FFHQ-UV's BiSeNet checkpoint (parsing_model/79999_iter.pth), relative to models.weights_dir or absolute;
    # None = the face region comes from the landmarks.
    face_parser: Optional[str] = None


def _view_fields() -> tuple[pa.Field, ...]:
    fields = []
    for view in VIEW_NAMES:
        fields += [
            pa.field(f"unwrap_landmark_error_px_{view}", pa.float32()),  # mean reprojection error, pixels
            pa.field(view_key(LANDMARK_ERROR_VIEW, view), pa.float32()),  # same, fraction of the face width
            pa.field(f"unwrap_valid_ratio_{view}", pa.float32()),  # share of the centre face the view fills
            pa.field(f"unwrap_yaw_{view}", pa.float32()),  # fitted head yaw, degrees
            # share of the face oval above the mouth masked as hair / occluder (stages/face/region.py; null: parser)
            pa.field(f"unwrap_masked_fraction_{view}", pa.float32()),
            # whether the face wears glasses, whose frames are then masked (stages/face/glasses.py; null: parser)
            pa.field(f"unwrap_glasses_{view}", pa.bool_()),
        ]
    # Where the face region came from: "parser" (BiSeNet labels) or "landmarks" (face oval).
    return tuple(fields) + (pa.field("unwrap_face_region", pa.string()),)


def face_parser_location(settings: Any, config: Any, option: str) -> Optional[str]:
    """The configured BiSeNet checkpoint (``settings.face_parser``: under models.weights_dir, absolute, or a URL) as
    a path or URL, None when unset; a one-line ConfigError naming it (and ``option``) when it is missing."""
    from stages.networks import weight_location

    if not settings.face_parser:
        return None
    try:
        return weight_location(configured_weights_dir(config), settings.face_parser, option)
    except ConfigError as error:
        raise ConfigError(f"{error}, or unset {option} to take the face region from the landmarks") from None


class UnwrapStage(Stage):
    """Per-view UV unwrapping on a fitted template."""

    name = "unwrap"
    Settings = UnwrapSettings
    manifest_fields = _view_fields()
    inputs = (ANY_VIEW,)
    outputs = (UV_VIEW, UVMASK_VIEW, LANDMARK_ERROR_VIEW)

    @classmethod
    def preflight(cls, settings: UnwrapSettings, config: Any) -> None:
        """Check that dlib (if chosen), the topology's sources and the face parser exist (cheap: no mesh loading)."""
        from stages.face.detectors import check_backend
        from stages.geometry.hifi3dpp import check_sources

        check_backend("stages.unwrap", settings.landmarks, settings.dlib_predictor, configured_weights_dir(config))
        check_sources(config)
        face_parser_location(settings, config, "stages.unwrap.face_parser")

    def setup(self) -> None:
        """Load the topology (cached UV products), its shape model and the landmark detector."""
        from stages.face.detectors import make_detector
        from stages.geometry.fitting import ShapeModel
        from stages.geometry.landmark_schemes import SCHEMES
        from stages.geometry.rasterize import backend_for_device, prepare_backend
        from stages.geometry.topologies import topology_from_config

        self.topology = topology_from_config(self.context.config)
        self.topology.masks()  # build or load the cache now, not inside the first sample's time
        self.detector = make_detector(self.settings.landmarks, 4, self.settings.dlib_predictor,
                                      self.context.weights_dir)
        self.shape_model = ShapeModel(self.topology, SCHEMES[self.detector.scheme])
        choice = self.settings.rasterizer
        self.backend = backend_for_device(self.context.device) if choice == "auto" else choice
        prepare_backend(self.backend, self.context.device)  # the nvdiffrast context, once per actor
        self.parser = None
        parser_location = face_parser_location(self.settings, self.context.config, "stages.unwrap.face_parser")
        if parser_location is not None:
            from stages.networks import local_weight_file
            from stages.networks.bisenet import FaceParser, load_bisenet

            parser = load_bisenet(local_weight_file(parser_location), self.context.device)
            self.parser = FaceParser(parser, device=self.context.device,
                                     fp16=bool(self.context.config.models.fp16))

    def process(self, sample: Sample) -> StageResult:
        """Unwrap every current view of the sample into ``uv_<view>`` / ``uvmask_<view>``."""
        views = current_views(sample)
        if not views:
            raise SampleError(NO_VIEWS, "no view image to unwrap (no view_*, relit_* or aligned output)")
        images = {view: self.context.read_image(path) for view, path in views.items()}
        landmarks = {view: self.detector.detect_one(image, self.settings.multiple_faces).points[:, :2]
                     for view, image in images.items()}
        regions = None
        if self.parser is not None:
            labels = self.parser.parse(list(images.values()))  # all views of the sample in one batch
            regions = {view: parsed_face_region(label, self.settings.exclude_eyes_mouth)
                       for view, label in zip(images, labels)}
        result = unwrap_sample(self.topology, self.shape_model, images, landmarks, self.settings, self.backend,
                               regions=regions)
        fields: dict[str, Any] = {"unwrap_face_region": "landmarks" if regions is None else "parser"}
        for view, out in result.items():
            self.context.write_image(sample, view_key(UV_VIEW, view), out.texture)
            self.context.write_image(sample, view_key(UVMASK_VIEW, view), out.mask)
            fields.update({
                f"unwrap_landmark_error_px_{view}": out.error_px,
                view_key(LANDMARK_ERROR_VIEW, view): out.error_px / out.face_width_px,
                f"unwrap_valid_ratio_{view}": out.valid_ratio,
                f"unwrap_yaw_{view}": out.yaw_degrees,
                f"unwrap_masked_fraction_{view}": out.masked_fraction,
                f"unwrap_glasses_{view}": out.glasses,
            })
        return StageResult(fields=fields)


@dataclass(frozen=True)
class ViewInput:
    """One view to unwrap: its name, (H, W, 3) uint8 image, (468, 2) or (68, 2) detected pixel landmarks and,
    optionally, an (H, W) bool face region (e.g. from the face parser; None = from the landmarks)."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    region: np.ndarray | None = None


@dataclass
class ViewUnwrap:
    """One view in UV space: (S, S, 3) uint8 texture (zero outside the mask), (S, S) uint8 mask (255 valid)."""

    texture: np.ndarray
    mask: np.ndarray
    error_px: float
    face_width_px: float
    valid_ratio: float
    yaw_degrees: float
    masked_fraction: float | None = None  # share of the upper face oval masked as hair/occluder (region.py)
    glasses: bool | None = None  # the face wears glasses (stages/face/glasses.py); None: a parsed region



def unwrap_sample(topology, shape_model, images: dict[str, np.ndarray], landmarks: dict[str, np.ndarray],
                  settings: UnwrapSettings, backend: str = "cpu", timings: dict[str, float] | None = None,
                  regions: dict[str, np.ndarray] | None = None) -> dict[str, ViewUnwrap]:
    """Fit all views together and unwrap each: view name -> ViewUnwrap. ``timings`` collects seconds per step.

    ``regions``: per view an (H, W) bool face region (e.g. from the face parser); None = from the landmarks.
    """
    import time

    from stages.geometry.fitting import fit_views

    timings = {} if timings is None else timings
    start = time.perf_counter()
    try:
        fit = fit_views(shape_model, landmarks, {v: im.shape[:2] for v, im in images.items()})
    except (RuntimeError, np.linalg.LinAlgError) as error:
        raise SampleError(FIT_FAILED, f"landmark fit failed: {error}") from None
    timings["fit"] = timings.get("fit", 0.0) + time.perf_counter() - start
    out = {}
    for view, image in images.items():
        region = None if regions is None else regions[view]
        out[view] = unwrap_view(topology, fit, ViewInput(view, image, landmarks[view], region), settings, backend,
                                timings)
    if len(out) == 1 and settings.symmetric_fill:
        start = time.perf_counter()
        (only,) = out.values()
        symmetric_fill(topology, only)
        timings["sample"] = timings.get("sample", 0.0) + time.perf_counter() - start
    return out


def unwrap_view(topology, fit, view_input: ViewInput, settings: UnwrapSettings, backend: str = "cpu",
                timings: dict[str, float] | None = None) -> ViewUnwrap:
    """Sample one view into the topology's UV map using the fitted shape and pose (``view_input.name``'s pose).

    ``backend``: the depth test's rasteriser (``cpu`` | ``nvdiffrast``); ``timings`` collects seconds per step.
    """
    import time

    import cv2

    from stages.geometry.landmark_schemes import scheme_of

    view, image, landmarks, region = view_input.name, view_input.image, view_input.landmarks, view_input.region
    timings = {} if timings is None else timings
    h, w = image.shape[:2]
    pose = fit.poses[view]
    start = time.perf_counter()
    texel_xyz, visible = texel_visibility(topology, fit, view, (h, w), backend if settings.depth_test else None)
    flat = topology.texel_samples()[0]
    timings["rasterise"] = timings.get("rasterise", 0.0) + time.perf_counter() - start

    start = time.perf_counter()
    s = topology.uv_size
    map_x = np.full(s * s, -1.0, dtype=np.float32)
    map_y = np.full(s * s, -1.0, dtype=np.float32)
    map_x[flat], map_y[flat] = texel_xyz[:, 0], texel_xyz[:, 1]
    map_x, map_y = map_x.reshape(s, s), map_y.reshape(s, s)
    texture = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    masked = glasses = None  # a parsed region has no skin model
    if region is None:
        region, masked, glasses = landmark_region(topology, fit, view, landmarks, h, w, settings.exclude_eyes_mouth,
                                                  image if settings.skin_region else None)
    region = region.astype(np.uint8)
    seg = cv2.remap(region * 255, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) > 127
    inside = (texel_xyz[:, 0] >= 0) & (texel_xyz[:, 0] <= w - 1) & (texel_xyz[:, 1] >= 0) & (texel_xyz[:, 1] <= h - 1)
    valid = np.zeros(s * s, dtype=bool)
    valid[flat] = visible & inside
    mask = valid.reshape(s, s) & seg
    # Texels of thin triangles at the silhouette and the ears land in the region as one-texel spikes: opened away.
    radius = max(1, round(MASK_OPEN_1024 * s / 1024))
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, disk(radius)) > 0
    texture = texture * mask[..., None]
    centre = topology.masks()["center_face"] > 0.5
    timings["sample"] = timings.get("sample", 0.0) + time.perf_counter() - start

    a, b = scheme_of(len(landmarks)).face_width
    return ViewUnwrap(
        texture=texture.astype(np.uint8),
        mask=(mask * 255).astype(np.uint8),
        error_px=fit.errors_px[view],
        face_width_px=float(np.linalg.norm(landmarks[a] - landmarks[b])),
        valid_ratio=float(mask[centre].mean()) if centre.any() else 0.0,
        yaw_degrees=pose.yaw_degrees(),
        masked_fraction=masked,
        glasses=glasses,
    )


def texel_visibility(topology, fit, view: str, size: tuple[int, int],
                     depth_backend: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Where each texel of the layout lands in a view, and whether the view sees it.

    Returns (P, 3) projected texel positions (pixels, camera depth) and (P,) bool visibility, both over
    ``topology.texel_samples()``: FFHQ-UV's normal test (blended vertex flags > 0.5), and with a
    ``depth_backend`` (``cpu`` | ``nvdiffrast``) a z-buffer depth test on top. ``size``: the view's (H, W).
    """
    from stages.geometry.visibility import (
        DEPTH_TOLERANCE,
        NORMAL_Z_MIN,
        depth_buffer,
        depth_visible,
        grazing_tolerance,
        normal_visible,
    )

    pose = fit.poses[view]
    vertices = fit.vertices_of(view)  # the shared shape plus this view's residual
    screen = pose.project(vertices)  # (N, 3): pixels, camera depth
    normals_cam = topology.vertex_normals(vertices) @ pose.rotation.T
    vertex_ok = normal_visible(normals_cam).astype(np.float64)
    # Depth change per unit of sideways travel on the surface (the visible ones face the camera by NORMAL_Z_MIN).
    slope = np.hypot(normals_cam[:, 0], normals_cam[:, 1]) / np.maximum(-normals_cam[:, 2], NORMAL_Z_MIN)
    blended = topology.texel_interpolate(np.column_stack([screen, vertex_ok, slope]))  # (P, 5)
    texel_xyz, visible = blended[:, :3], blended[:, 3] > 0.5
    if depth_backend is not None:
        zbuf, scale = depth_buffer(screen, topology.triangles, size[0], size[1], backend=depth_backend)
        extent = float(np.ptp(screen[:, 2]))
        facing = np.flatnonzero(visible)  # only texels that pass the normal test can fail the depth test
        tolerance = DEPTH_TOLERANCE * extent + grazing_tolerance(texel_xyz[facing, 2], blended[facing, 4],
                                                                 pose.focal, scale)
        visible[facing] = depth_visible(texel_xyz[facing], zbuf, scale, tolerance)
    return texel_xyz, visible


def landmark_region(topology, fit, view: str, landmarks: np.ndarray, height: int, width: int,
                    exclude_eyes_mouth: bool, image: np.ndarray | None = None
                    ) -> tuple[np.ndarray, float, bool | None]:
    """(H, W) bool face region of a view from its (468, 2) or (68, 2) detected pixel landmarks, the share of the
    upper face oval masked as hair or occluder (``face_region``; ``image`` given = the skin segmentation), and
    whether the face wears glasses (None without ``image``).

    468 points: their own contours (``face_region``). 68 points (dlib) have no face-oval or eyelid contours: the
    fitted surface's embedded mediapipe points projected into the view give them, forehead included, and the
    region is clipped to dlib's jaw, the face's silhouette below the ears, closed through the image's top edge.
    """
    import cv2

    from stages.geometry.landmark_schemes import scheme_of

    points = landmarks
    if len(landmarks) != topology.landmarks.triangles.shape[0]:
        points = fit.poses[view].project(topology.landmark_points(fit.vertices_of(view)))[:, :2]
    glasses = None if image is None else wears_glasses(image, points)
    region, masked = face_region(points, height, width, exclude_eyes_mouth, image, glasses)
    if points is landmarks:
        return region, masked, glasses
    jaw = landmarks[list(scheme_of(len(landmarks)).contour)]
    outline = np.concatenate([jaw, [[jaw[-1, 0], 0.0], [jaw[0, 0], 0.0]]])
    clip = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(clip, [np.round(outline * 16).astype(np.int32)], 1, shift=4)
    return region & clip.astype(bool), masked, glasses


def symmetric_fill(topology, unwrap: ViewUnwrap) -> None:
    """Fill texels a single view cannot see from their mirror texels (about the nose-tip column), in place."""
    import cv2

    from stages.geometry.uv_topology import EYE_FILL_BOXES, NOSE_TIP

    s = topology.uv_size
    axis = float(topology.landmark_uv()[NOSE_TIP, 0])
    map_x = np.tile((2 * axis - np.arange(s)).astype(np.float32), (s, 1))
    map_y = np.tile(np.arange(s, dtype=np.float32)[:, None], (1, s))
    mirrored = cv2.remap(unwrap.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mirrored_mask = cv2.remap(unwrap.mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    take = (unwrap.mask == 0) & (mirrored_mask > 0) & (topology.masks()["unwrap_mask"] > 0.5)
    centre = topology.masks()["center_face"] > 0.5
    # An eye the view sees keeps its own opening for the completion to close: where the other eye's hole is smaller,
    # its mirrored texels would put back lashes and lid that this eye's hole took out. A hidden eye is mirrored.
    for box in topology.fill_regions():
        window = (slice(box.top, box.bottom), slice(box.left, box.right))
        seen = unwrap.mask[window][centre[window]] > 0
        if box.name in EYE_FILL_BOXES and seen.size and seen.mean() >= SEEN_EYE_BOX:
            take[window] = False
    if take.any():
        unwrap.texture[take] = match_mirror_to_seam(unwrap.texture, unwrap.mask > 0, mirrored, mirrored_mask > 0, take)
    unwrap.mask[take] = 255
    unwrap.valid_ratio = float((unwrap.mask[centre] > 0).mean()) if centre.any() else 0.0


def match_mirror_to_seam(texture: np.ndarray, seen: np.ndarray, mirrored: np.ndarray, mirror_seen: np.ndarray,
                         take: np.ndarray) -> np.ndarray:
    """The mirrored texels shifted to meet the view's own texels without a step where they join.

    The two sides of a photo are lit differently, so a plain mirror copy joins the view's own far-side texels in a
    seam that follows the jagged edge of what the view saw. Along that edge (``MIRROR_SEAM_BAND_1024`` wide) the
    difference own - mirrored is measured where both are seen, continued over the mirrored texels (pull-push) and
    faded out over ``MIRROR_SEAM_FADE_1024`` texels from the edge: the step vanishes at the seam, and further away
    the mirror keeps its own brightness (a shading difference carried across the whole side would make the map
    lopsided). texture, mirrored: (S, S, 3) uint8; seen, mirror_seen, take: (S, S) bool. Returns the (N, 3) uint8
    colours of the N ``take`` texels.
    """
    import cv2

    from stages.texture.pyramid import pull_push_fill

    size = texture.shape[0]
    band = max(1, round(MIRROR_SEAM_BAND_1024 * size / 1024))
    near_seam = cv2.dilate(take.astype(np.uint8), np.ones((2 * band + 1,) * 2, np.uint8))
    left, top, width, height = cv2.boundingRect(near_seam)  # the work is done on the mirrored part's box
    box = (slice(top, top + height), slice(left, left + width))
    known = seen[box] & mirror_seen[box] & (near_seam[box] > 0)
    difference = texture[box].astype(np.float32) - mirrored[box].astype(np.float32)
    offset = pull_push_fill(difference, known.astype(np.float32))
    distance = cv2.distanceTransform((~seen).astype(np.uint8), cv2.DIST_L2, 5)  # texels from the view's own
    fade = np.clip(1.0 - distance[take] / (MIRROR_SEAM_FADE_1024 * size / 1024), 0.0, 1.0)[:, None]
    return np.clip(np.rint(mirrored[take] + offset[take[box]] * fade), 0, 255).astype(np.uint8)
