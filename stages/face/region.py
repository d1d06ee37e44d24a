"""Which pixels of a view belong to the face region that unwrap samples into the UV map.

FFHQ-UV takes the region from its face parser (BiSeNet: skin, brows, eyes, nose, lips; hair, ears, neck and
background out). ``parsed_face_region`` does the same when the parser's weights are configured. Without them the
region comes from the mediapipe landmarks and the view's own colours:

- ``face_region``: the face oval (468-point contour) minus the eyes and the mouth opening; with the view's image,
  the skin the view shows (``skin_face_region``) minus the same holes;
- ``skin_face_region``: a two-class segmentation of skin against hair and background by OpenCV's GrabCut
  (Gaussian-mixture colour models of both classes and a graph cut, Rother et al. 2004), seeded from the
  landmarks: the sample's own cheek/nose skin (the pixels the YCbCr skin prior of ``stages/face/skin.py`` accepts
  inside the eroded oval) is sure face, the rest of the oval probable face, the extension zone (forehead up to the
  hairline, the visible cheek of a turned view) probable background, everything around it sure background. It
  drops hair strands, fringes, glasses frames and hands from the oval and stops the forehead at the hairline.
  Oval pixels the skin prior accepts (as smooth as skin above the brows) stay face whatever GrabCut says, so a
  shadowed cheek beside a skin-coloured background is kept;
- brows, eyes, lips and nostrils (``protected_features``) are face whatever their colour; the brows not along the
  oval's outline, where hair over the temples lies on their tails;
- on a face that wears glasses, their footprint (the rims around the lenses' middle, the bridge and the arms:
  ``stages/face/glasses.py``) is not face, as the parser's eyeglasses label is not.

Shapes: images (H, W, 3) uint8 RGB, landmarks (468, 2) pixels (x right, y down), masks (H, W) bool.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.face.glasses import glasses_footprint, wears_glasses
from stages.face.landmarks import (
    EYELID_RING_INNER_CORNER,
    EYELID_RING_LOWER,
    EYELID_RING_OUTER_CORNER,
    EYELID_RING_UPPER,
    MOUTH_CORNER_IMAGE_LEFT,
    MOUTH_CORNER_IMAGE_RIGHT,
    NOSE_TIP,
)
from stages.face.skin import fit_skin_model, skin_pixels, strand_energy, to_ycc
from stages.geometry.uv_topology import (
    BROW_TOP,
    EAR_FRONT,
    NOSTRIL_IMAGE_LEFT,
    NOSTRIL_IMAGE_RIGHT,
    OUTER_EYE_IMAGE_LEFT,
    OUTER_EYE_IMAGE_RIGHT,
    edge_loops,
    polygon_area,
)
from stages.networks.bisenet import face_parsing_mask

# FFHQ-UV's parsing mask dilates the eye holes by about 5 px at 1024 (box-blur 11 then >= 1, pipeline.md 2.4(a)).
EYE_DILATE_1024 = 5
# How far each eyelid-contour point moves towards its partner on the next ring out (``eye_holes``), per lid part,
# for the hole, and for the zone where dark pixels connected to it join it (``dark_lashes``: lashes, eyeliner and
# corner shadow are darker than LASH_DARKNESS times the lid's skin).
EYE_HOLE_REACH = {"upper": 0.85, "lower": 0.2, "outer_corner": 1.0, "inner_corner": 0.6}
LASH_SEARCH_REACH = {"upper": 1.6, "lower": 0.25, "outer_corner": 3.0, "inner_corner": 1.2}
LASH_DARKNESS = 0.72
# Eyelid-contour point -> (its partner on the next ring out, the lid part it belongs to).
EYELID_RING = {point: (partner, part) for part, ring in (
    ("upper", EYELID_RING_UPPER), ("lower", EYELID_RING_LOWER), ("outer_corner", EYELID_RING_OUTER_CORNER),
    ("inner_corner", EYELID_RING_INNER_CORNER)) for point, partner in ring.items()}
# Skin face region (``skin_face_region``): skin is looked for inside the face oval scaled by SKIN_EXTEND about its
# centre (the oval stops a third of the forehead below the hairline and short of the ears; 1.3 left the top corners
# of faces/000007's forehead out of reach, which FFHQ-UV's parser keeps as face); the colour model's
# seed is the oval eroded by SEED_ERODE, brows/eyes/lips/nostrils grown by FEATURE_PAD are kept as face whatever
# their colour, the background class is sampled in a band BACKGROUND_BAND wide around the search zone, and the
# face mask is closed and opened with SKIN_SMOOTH; all fractions of the face width.
SKIN_EXTEND = 1.4
SKIN_WORK_WIDTH = 160  # px: the segmentation works on the view scaled to at most this face width
# A view counts as turned when one half of its face oval (nose tip to contour) is this much wider than the other,
# fully from TURNED_RATIO + TURNED_RAMP.
TURNED_RATIO, TURNED_RAMP = 1.3, 0.3
SEED_ERODE = 0.08
FEATURE_PAD = 0.03
# Brows are protected only this far inside the oval's outline (fraction of the face width): hair falling over the
# temples lies on the brows' tails there (015309, 01223), and the tails of the shared photos' brows end 4-6 % of
# the face width inside it, so this margin takes at most the last hairs of a brow.
BROW_EDGE_MARGIN = 0.06
SKIN_SMOOTH = 0.01
DROPPED_MARGIN = 0.015  # the region keeps this far from hair or background it dropped inside the oval
BACKGROUND_BAND = 0.15
# GrabCut has converged by its second iteration on the shared photos and views (regions within IoU 0.984 of
# three iterations, same masked fractions), and each costs about 0.05 s per view.
GRABCUT_ITERATIONS = 2
OUTLINE_MARGIN = 0.04  # masked_fraction ignores this band inside the oval's outline (fraction of the face width)
# GrabCut's features (``_grabcut_colours``): strand texture in skin deviations, chroma stretched about neutral.
GRABCUT_ENERGY_GAIN, GRABCUT_CHROMA_GAIN = 6.0, 3.0
SMOOTH_SPREAD = 4.0  # strand deviations below which skin-hued oval pixels are kept as face


def fill_polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool inside the polygon of (K, 2) pixel points."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], 1, shift=4)
    return canvas.astype(bool)


def convex_hull_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool inside the convex hull of (K, 2) pixel points."""
    return fill_polygon(cv2.convexHull(points.astype(np.float32))[:, 0, :].astype(np.float64), height, width)


def disk(radius: int) -> np.ndarray:
    """A (2r+1, 2r+1) elliptic structuring element."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)


def _face_mesh_connections():
    # mediapipe's solutions package takes most of a second to import: only when a region is computed.
    from mediapipe.python.solutions import face_mesh_connections

    return face_mesh_connections


def oval_loop() -> list[int]:
    """mediapipe's face-oval landmarks in contour order."""
    return edge_loops(_face_mesh_connections().FACEMESH_FACE_OVAL)[0]


def face_width_px(landmarks: np.ndarray) -> float:
    """Distance between the two points in front of the ears, in pixels."""
    return float(np.linalg.norm(landmarks[EAR_FRONT[0]] - landmarks[EAR_FRONT[1]]))


def face_region(landmarks: np.ndarray, height: int, width: int, exclude_eyes_mouth: bool,
                image: np.ndarray | None = None, glasses: bool | None = None) -> tuple[np.ndarray, float]:
    """(H, W) bool face region from (468, 2) pixel landmarks, and the share of the upper face oval masked as hair or
    occluder (``masked_fraction``; 0 without ``image``).

    Without ``image``: the face oval minus eyes and mouth opening. With the view's (H, W, 3) ``image``: the skin
    the view shows (``skin_face_region``) minus the same holes and, when the face wears glasses (``glasses``;
    None = ``wears_glasses`` decides), their footprint.
    """
    fmc = _face_mesh_connections()
    region = fill_polygon(landmarks[oval_loop()], height, width)
    masked = 0.0
    if image is not None:
        oval = region
        region = skin_face_region(image, landmarks, oval)
        if glasses is None:
            glasses = wears_glasses(image, landmarks)
        if glasses:  # skin-hued frames pass the skin segmentation, rims lie on the brows
            region &= ~glasses_footprint(landmarks, height, width)
        masked = masked_fraction(oval, region, landmarks)
    if exclude_eyes_mouth:
        lips = sorted(edge_loops(fmc.FACEMESH_LIPS), key=lambda loop: polygon_area(landmarks[loop]))
        region &= ~(eye_holes(landmarks, height, width, image) | fill_polygon(landmarks[lips[0]], height, width))
    return region, masked


def eye_holes(landmarks: np.ndarray, height: int, width: int, image: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool: both eyes, the opening with its lashes, eyeliner and shadowed corners.

    That is more than FFHQ-UV's parser labels eye: on faces/000007 and 000055 the eye holes of its ``parse_mask``
    (its RGB-fitting inputs, 224 crop) are the opening inside the lid rims, about half of these holes before the
    dilation, and FFHQ-UV's maps keep the lashes as a dark line along the top of the closed lid
    (``tex_teaser1.png``). Taking them out is this project's choice: left at the hole's rim, the closing fill
    smeared them over the whole closed lid (``bench/score_ffhq_uv.py``'s eye bands).

    mediapipe's eyelid contour runs along the lids' rims, inside the lash line: each contour point is pushed
    towards its partner on the next ring of mesh points out (``EYELID_RING_*``) by ``EYE_HOLE_REACH`` (most of
    the way above, over the upper lashes; less below, where the lower lid's skin begins right under its thin
    lashes; past the corners). With the view's (H, W, 3) uint8 ``image``, the lashes, eyeliner and corner shadow
    beyond that (``dark_lashes``) join it, found by their look; then the hole is dilated as FFHQ-UV dilates its
    parser's eye label.
    """
    fmc = _face_mesh_connections()
    luma = None if image is None else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    holes = np.zeros((height, width), dtype=bool)
    for connections in (fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_RIGHT_EYE):
        loop = edge_loops(connections)[0]
        contour = landmarks[loop]
        outwards = landmarks[[EYELID_RING[point][0] for point in loop]] - contour  # (16, 2) px
        parts = [EYELID_RING[point][1] for point in loop]
        hole = fill_polygon(contour + np.array([EYE_HOLE_REACH[part] for part in parts])[:, None] * outwards,
                            height, width)
        if luma is not None:
            search = contour + np.array([LASH_SEARCH_REACH[part] for part in parts])[:, None] * outwards
            hole |= dark_lashes(luma, hole, search)
        holes |= hole
    radius = max(1, round(EYE_DILATE_1024 * max(height, width) / 1024))
    return cv2.dilate(holes.astype(np.uint8), disk(radius)) > 0


def dark_lashes(luma: np.ndarray, hole: np.ndarray, search: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels inside the ``search`` polygon ((K, 2) px) around an eye darker than ``LASH_DARKNESS``
    times the median luma of the lid and under-eye skin there, and connected to the (H, W) bool ``hole``:
    lashes, eyeliner and the shadowed eye corners. ``luma``: (H, W) uint8. Works on the polygon's bounding box."""
    height, width = luma.shape
    dark = np.zeros((height, width), dtype=bool)
    x0, y0 = np.maximum(np.floor(search.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(search.max(axis=0)).astype(int) + 2, [width, height])
    if x1 <= x0 or y1 <= y0:
        return dark
    inside = fill_polygon(search - [x0, y0], y1 - y0, x1 - x0)
    known = hole[y0:y1, x0:x1]
    skin = inside & ~known
    if not skin.any() or not known.any():
        return dark
    crop = luma[y0:y1, x0:x1]
    candidate = (inside & (crop < LASH_DARKNESS * float(np.median(crop[skin])))) | known
    _, components = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    touching = np.unique(components[known])
    dark[y0:y1, x0:x1] = np.isin(components, touching) & candidate
    return dark


def masked_fraction(oval: np.ndarray, region: np.ndarray, landmarks: np.ndarray) -> float:
    """Share of the face oval's inside above the mouth corners that ``region`` leaves out: hair falling over the
    forehead, temples and cheeks, glasses frames, a hand. The oval is first eroded by ``OUTLINE_MARGIN``: along
    its outline the segmentation only moves the edge to the face's true silhouette, which is no occlusion; below
    the mouth the outline is the jaw, which hair seldom covers and the neck's shadow often darkens."""
    inner = inside_outline(oval, face_width_px(landmarks))
    inner[max(0, mouth_row(landmarks)):] = False
    return float((inner & ~region).sum() / max(int(inner.sum()), 1))


def inside_outline(oval: np.ndarray, face_width: float) -> np.ndarray:
    """(H, W) bool: the (H, W) face oval less the band ``OUTLINE_MARGIN`` of the ``face_width`` (px) inside its
    outline, where a segmentation only moves the edge to the face's true silhouette."""
    return cv2.erode(oval.astype(np.uint8), disk(max(1, round(OUTLINE_MARGIN * face_width)))) > 0


def mouth_row(landmarks: np.ndarray) -> int:
    """The first pixel row at or below the mouth corners of (468, 2) landmarks: below it the outline is the jaw."""
    return int(np.ceil((landmarks[MOUTH_CORNER_IMAGE_LEFT, 1] + landmarks[MOUTH_CORNER_IMAGE_RIGHT, 1]) / 2))


def protected_features(landmarks: np.ndarray, oval: np.ndarray) -> np.ndarray:
    """(H, W) bool: brows, eyes, lips and nostrils (convex hulls grown by ``FEATURE_PAD``), which are face but not
    skin-coloured, inside the (H, W) face oval; the brows only as far as ``BROW_EDGE_MARGIN`` from the oval's
    outline, where hair falling over the temples covers their tails (``segment_skin`` leaves those to GrabCut)."""
    fmc = _face_mesh_connections()
    height, width = oval.shape
    face_width = face_width_px(landmarks)
    pad = disk(max(1, round(FEATURE_PAD * face_width)))

    def hulls(*groups) -> np.ndarray:
        mask = np.zeros((height, width), dtype=bool)
        for group in groups:
            mask |= convex_hull_mask(landmarks[sorted(group)], height, width)
        return cv2.dilate(mask.astype(np.uint8), pad) > 0

    def points(connections) -> set[int]:
        return {a for edge in connections for a in edge}

    inner_oval = cv2.erode(oval.astype(np.uint8), disk(max(1, round(BROW_EDGE_MARGIN * face_width)))) > 0
    brows = hulls(points(fmc.FACEMESH_LEFT_EYEBROW), points(fmc.FACEMESH_RIGHT_EYEBROW)) & inner_oval
    rest = hulls(points(fmc.FACEMESH_LEFT_EYE), points(fmc.FACEMESH_RIGHT_EYE), points(fmc.FACEMESH_LIPS),
                 NOSTRIL_IMAGE_LEFT, NOSTRIL_IMAGE_RIGHT)
    return (brows | rest) & oval


def skin_face_region(image: np.ndarray, landmarks: np.ndarray, oval: np.ndarray) -> np.ndarray:
    """``segment_skin`` on a copy of the view scaled so the face is at most ``SKIN_WORK_WIDTH`` px wide (colour
    statistics need no more, and a 1024 view costs 40 times less), the (H, W) bool region scaled back."""
    h, w = oval.shape
    width = face_width_px(landmarks)
    scale = min(1.0, SKIN_WORK_WIDTH / max(width, 1.0))
    if scale >= 1.0:
        return segment_skin(image, landmarks, oval)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    points = (landmarks + 0.5) * np.array([size[0] / w, size[1] / h]) - 0.5
    small_oval = fill_polygon(points[oval_loop()], size[1], size[0])
    region = segment_skin(small, points, small_oval)
    region = cv2.resize(region.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    # Features stay face at full resolution (their hulls are thin at the working scale).
    return region | protected_features(landmarks, oval)


def segment_skin(image: np.ndarray, landmarks: np.ndarray, oval: np.ndarray) -> np.ndarray:
    """The (H, W) bool face region a view shows, from its (H, W, 3) uint8 RGB image, (468, 2) landmarks and (H, W)
    face oval: GrabCut seeded from the landmarks and the sample's skin colour model (module docstring)."""
    h, w = oval.shape
    width = face_width_px(landmarks)
    zone = extension_zone(landmarks, h, w) & ~oval
    protected = protected_features(landmarks, oval)
    search = zone | oval
    brow_y = float(landmarks[list(BROW_TOP), 1].mean())
    box = _segmentation_box(search, oval, max(2, round(BACKGROUND_BAND * width)))
    ycc = to_ycc(image[box])
    seed = cv2.erode(oval[box].astype(np.uint8), disk(max(1, round(SEED_ERODE * width)))) > 0
    model = fit_skin_model(ycc, seed & ~protected[box])
    if model is None:
        return oval
    skin = skin_pixels(ycc, model)  # the skin prior, used to seed GrabCut and to check its result
    sure = seed & ~protected[box] & skin
    labels = np.full(sure.shape, cv2.GC_BGD, dtype=np.uint8)
    labels[search[box]] = cv2.GC_PR_BGD
    # Zone pixels the skin prior accepts start as face: on a bare forehead the zone is mostly skin, which must not
    # teach the background model skin colours.
    labels[(zone[box] & skin) | oval[box]] = cv2.GC_PR_FGD
    labels[sure | protected[box]] = cv2.GC_FGD
    if not (labels == cv2.GC_BGD).any() or not (labels == cv2.GC_FGD).any():
        return oval  # the face fills the image: no background to learn from
    texture = strand_deviation(ycc, width, seed & ~protected[box])
    colours = _grabcut_colours(ycc, texture, protected[box], model.mean)
    background_model, face_model = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(colours, labels, None, background_model, face_model, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    face = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)
    radius = max(1, round(SKIN_SMOOTH * width))
    face = cv2.morphologyEx(cv2.morphologyEx(face, cv2.MORPH_CLOSE, disk(radius)), cv2.MORPH_OPEN, disk(radius))
    # Only skin connected to the face's own: a hand or a background of a similar colour stays out.
    _, components = cv2.connectedComponents(face)
    keep = np.unique(components[seed & (components > 0)])
    face = np.isin(components, keep) & (face > 0) & search[box]
    # A fringe's or a strand's edge is a blend of hair and skin: keep a margin from what was dropped inside the
    # face, and above the mouth (hair falls over the forehead, temples and cheeks) from all that was dropped. Below
    # it, along the oval's outline (OUTLINE_MARGIN), what was dropped is the background beyond the jaw's
    # silhouette, whose edge FFHQ-UV's parser keeps as face (the merge erodes each view's mask anyway).
    inner = inside_outline(oval[box], width)
    mouth = max(0, mouth_row(landmarks) - box[0].start)
    inner[:mouth] = oval[box][:mouth]
    dropped = (inner & ~face).astype(np.uint8)
    face &= ~(cv2.dilate(dropped, disk(max(1, round(DROPPED_MARGIN * width)))) > 0)
    smooth = texture < SMOOTH_SPREAD
    # Beyond the oval (the forehead up to the hairline) only skin-coloured, skin-smooth pixels GrabCut kept. (The
    # skin FFHQ-UV's parser keeps in the hair's shade under faces/000055's hairline is darker than the prior allows,
    # but 01223's brown-blond hair beside her forehead has the same colour: chroma distance 1.0 vs 0.9, luma 4.4 vs
    # 3.1 deviations under the skin's, so the prior is not relaxed there.)
    face &= oval[box] | (skin & smooth)
    # Inside the oval, what the skin prior accepts stays face whatever GrabCut says (a shadowed cheek beside a
    # background of skin-like colour, a brick wall, is not hair); above the brows, where fringes fall, it must also
    # be as smooth as skin.
    smooth[max(0, int(np.ceil(brow_y - box[0].start))):] = True
    face |= oval[box] & skin & smooth
    region = np.zeros((h, w), dtype=bool)
    region[box] = face
    return region | protected


def _segmentation_box(search: np.ndarray, oval: np.ndarray, band: int) -> tuple[slice, slice]:
    """Rows and columns around the search zone grown by ``band`` px, cut at the chin: the neck below is skin that
    must not teach the background model skin colours."""
    rows, cols = np.nonzero(cv2.dilate(search.astype(np.uint8), disk(band)))
    chin = int(np.nonzero(oval)[0].max()) + 1
    return slice(int(rows.min()), chin), slice(int(cols.min()), int(cols.max()) + 1)


def strand_deviation(ycc: np.ndarray, width: float, seed: np.ndarray) -> np.ndarray:
    """(h, w) float32 ``strand_energy`` of ``to_ycc`` values in median absolute deviations from the ``seed`` skin's
    median (0 = as smooth as the sample's skin; a fringe or strands lie several deviations above)."""
    energy = strand_energy(ycc, width)
    median = float(np.median(energy[seed]))
    spread = float(np.median(np.abs(energy[seed] - median))) + 1e-3
    return (energy - median) / spread


def _grabcut_colours(ycc: np.ndarray, texture: np.ndarray, neutral: np.ndarray, skin_mean: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 GrabCut input from ``to_ycc`` values: hair-strand texture and chroma, no luma.

    Channel 0 is ``strand_deviation`` at ``GRABCUT_ENERGY_GAIN`` levels per deviation about 128: a blonde fringe
    has the skin's hue but not its smoothness. Channels 1-2 are Cb, Cr stretched by ``GRABCUT_CHROMA_GAIN`` about
    128: dark hair, background and glasses differ in hue or saturation. Luma is left out: shading moves it, and a
    shadowed cheek is still face. ``neutral`` pixels (brows, eyes, lips) get the skin's values so they do not teach
    the face model their colours.
    """
    channel = 128.0 + GRABCUT_ENERGY_GAIN * texture
    channel[neutral] = 128.0
    chroma = ycc[..., 1:].copy()
    chroma[neutral] = skin_mean[1:]
    chroma = (chroma - 128.0) * GRABCUT_CHROMA_GAIN + 128.0
    return np.ascontiguousarray(np.clip(np.dstack([channel, chroma]), 0, 255).astype(np.uint8))


def extension_zone(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool where skin beyond the face oval may belong to the face region: the oval pushed outwards from
    its centre by up to ``SKIN_EXTEND`` - 1 of its radius, fully at the forehead's top (fading out towards the
    eyes), and sideways on the visible cheek of a turned view (the side whose half-width is larger; the far side's
    oval is the face's silhouette) down to the mouth."""
    loop = landmarks[oval_loop()]
    centre = loop.mean(axis=0)
    nose = landmarks[NOSE_TIP]
    eye_y = (landmarks[OUTER_EYE_IMAGE_LEFT, 1] + landmarks[OUTER_EYE_IMAGE_RIGHT, 1]) / 2
    top_y = loop[:, 1].min()
    up = np.clip((eye_y - loop[:, 1]) / max(eye_y - top_y, 1e-6), 0.0, 1.0)
    half_left, half_right = nose[0] - loop[:, 0].min(), loop[:, 0].max() - nose[0]
    ratio = max(half_left, half_right) / max(min(half_left, half_right), 1e-6)
    near_is_left = half_left > half_right
    near = (loop[:, 0] < nose[0]) == near_is_left
    turned = np.clip((ratio - TURNED_RATIO) / TURNED_RAMP, 0.0, 1.0)
    side = near * turned * (loop[:, 1] < landmarks[MOUTH_CORNER_IMAGE_LEFT, 1])
    weight = np.maximum(up, side)
    pushed = centre + (loop - centre) * (1.0 + (SKIN_EXTEND - 1.0) * weight[:, None])
    return fill_polygon(pushed, height, width)


def parsed_face_region(labels: np.ndarray, exclude_eyes_mouth: bool) -> np.ndarray:
    """(H, W) bool face region from (H, W) BiSeNet labels: FFHQ-UV's parsing mask, its eye box scaled to the view."""
    radius = max(1, round(EYE_DILATE_1024 * max(labels.shape) / 1024))
    return face_parsing_mask(labels, exclude_eyes_mouth, eye_box=2 * radius + 1)
