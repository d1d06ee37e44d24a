"""Views -> one complete UV map: FFHQ-UV's merge, correction and completion (pipeline.md 2.4 (e)-(g)).

1. ``merge_views``: starting from the template, each view (left, right, then front,
   so the front wins) is blended over the canvas, which is first colour-matched to
   the view (``fill_facial_region``).
2. ``unreliable_mask`` + ``solve_unreliable``: texels of the centre face that no view
   filled, plus the nostrils (seen twice from the three views), are Poisson-filled
   inside the topology's fill regions from the raw template's gradients, so eyes
   come out closed and the mouth shut, as in FFHQ-UV.
   With a single view (a photo) there is no double vision and the photo's own lips,
   lids and nostrils are kept: only the openings (eyes, mouth) and unseen texels
   (beyond a light erosion of the view's mask) are solved from the sample's own skin just above them: an eye
   shaded from its rim with the grain of the upper lid (``closed_lid_source``), the mouth as the two lips
   continued towards each other to a soft seam (``closed_lips_source``), the nose base from the skin above it
   (``own_skin_source``), so a closed eye is the person's lid and a closed mouth the person's lips, not a
   template's drawing.
3. ``blend_with_template``: outside the reliable region the colour-matched template
   takes over through a Laplacian-pyramid blend; the template's own hair covers the
   hair region. With a single view the face area is first completed from the sample's own skin
   (``continue_own_skin``): its colour (pull-push, relaxing into the colour-matched template's away from the seen
   skin) and its fine texture (``skin_detail.own_skin_detail``).

Region masks come from the topology under FFHQ-UV's names (``center_face``, ``hair``,
``mouth_contrast``, ``nosal_base``, ``nostril``, ``major_valid_<view>``,
``minor_valid_<view>``, ``major_valid_whole``, ``minor_valid_whole``; ours: ``minor_valid_alone``, a lone
view's minor region), each (H, W)
float32 in [0, 1]. Textures are (H, W, 3) float RGB in [0, 255].
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from stages.geometry.uv_topology import EYE_FILL_BOXES
from stages.texture.color import match_color_yuv, rgb_to_yuv
from stages.texture.masks import (
    binarize,
    box_blur,
    channels,
    erode_view_mask,
    hair_weight,
    major_minor_weight,
    view_blend_weight,
)
from stages.texture.poisson import laplacian_matrix, poisson_fill
from stages.texture.pyramid import LEVELS, pull_push_fill, pyramid_blend
from stages.texture.skin_detail import own_skin_detail, skin_detail, skin_source

# FFHQ-UV's merge order (tex/__init__.py): each later view is blended over the previous canvas.
MERGE_ORDER = ("left", "right", "front")
# Dark texels near the nose base are dilated by box5 before counting as nostril double vision.
NOSTRIL_DILATE_BOX = 5
# The Poisson mask is kept this many texels away from a fill box's edge (FFHQ-UV's ``bl = 2``).
FILL_BOX_MARGIN = 2
# A single view's own-skin continuation fades into the template over this box blur of the face area (texels).
FACE_AREA_FEATHER_BOX = 51
# ... and its seen skin into the continuation over about twice this many texels inside its edge (at 1024).
SEEN_EDGE_FEATHER_1024 = 6
# The continued colour relaxes from the nearest seen skin's to the colour-matched template's, by exp(-d / this)
# at d texels (at 1024) from the seen skin: a jaw's shadow or a silhouette's darker rim stays near the jaw and
# does not spread over the neck, ears and the far sides (FFHQ-UV's maps carry those in the face's own tone).
OWN_SKIN_COLOUR_REACH_1024 = 96.0
# A single view's eye openings take the grain of the lid above them (``closed_lid_source``): its detail above a
# Gaussian of this sigma (texels), at most OWN_SKIN_GRAIN_LIMIT levels (skin's grain is a few levels, hair's tens),
# from a band at least OWN_SKIN_MIN_BAND rows tall.
OWN_SKIN_DETAIL_SIGMA = 2.0
OWN_SKIN_GRAIN_LIMIT = 6.0
OWN_SKIN_MIN_BAND = 3
# A single view's boxes close the openings within this many texels (at 1024) of the topology's eye, mouth and
# nostril regions: the view's holes take the lashes and the lips' inner rims beyond them.
OPENING_REACH_1024 = 16
# A closed eye's copied skin texture fades in over this many texels at 1024 from the opening's rim.
EYE_DETAIL_FEATHER_1024 = 7
# The colour-matched template gives way to the raw one over this box blur of the hair region's edge (texels): a
# hairline's soft edge, not a feather into the forehead.
HAIR_EDGE_BOX = 5
# A single view's mouth opening closes as the lips meeting (``closed_lips_source``): each lip's grain mirrored
# into its half of the opening, and a seam LIP_SEAM_DEPTH levels darker along the middle, a Gaussian across of
# LIP_SEAM_SIGMA_1024 texels (at 1024), whose row is averaged over LIP_SEAM_SMOOTH_1024 columns: the opening's
# ragged outline would make it wave.
MOUTH_FILL_BOX = "mouth"  # FFHQ-UV's name, every topology
LIP_SEAM_DEPTH = 15.0
LIP_SEAM_SIGMA_1024 = 1.8
LIP_SEAM_SMOOTH_1024 = 31
LIP_GRAIN_ROW_MEAN_1024 = 15  # texels along a row whose mean the lips' grain is taken less

Box = tuple[int, int, int, int]  # (row0, row1, col0, col1), half-open, in UV texels


@dataclass
class UVView:
    """One view unwrapped into UV space: texture (H, W, 3) float in [0, 255] and valid mask (H, W) in {0, 1}."""

    texture: np.ndarray
    mask: np.ndarray


@dataclass
class CompletedTexture:
    """Result of ``complete_texture``; masks are (H, W) float32 in {0, 1}."""

    uv: np.ndarray  # (H, W, 3) uint8 RGB, the final map
    fill_mask: np.ndarray  # texels taken from the views (union of their eroded masks inside minor_valid)
    solved_mask: np.ndarray  # texels inside the Poisson fill regions
    unreliable_mask: np.ndarray  # texels judged unreliable; those inside the fill boxes were re-synthesised
    view_fill_masks: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # merge, poisson, blend


def fill_facial_region(canvas: np.ndarray, view: UVView, major: np.ndarray, minor: np.ndarray,
                       mouth_contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend one view over the canvas (pipeline.md 2.4 (e)).

    canvas: (H, W, 3) float in [0, 255]; major, minor: the view's ``major_valid_*`` /
    ``minor_valid_*`` masks; mouth_contrast: where the view mask is eroded lightly.
    Returns the new canvas (H, W, 3) float32 and the view's fill mask (H, W) float32
    (its eroded mask inside ``minor``).
    """
    texture = np.asarray(view.texture, dtype=np.float32) * view.mask[:, :, None]
    matched = match_color_yuv(canvas, texture, view.mask)
    eroded = erode_view_mask(view.mask, mouth_contrast)
    weight = view_blend_weight(view.mask, eroded, major, minor)[:, :, None]
    # texture * weight + matched * (1 - weight), with two (H, W, 3) temporaries instead of four
    matched += (texture - matched) * weight
    return matched, eroded * minor


def merge_views(template: np.ndarray, views: Mapping[str, UVView],
                regions: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Blend the views over the template in FFHQ-UV's order (left, right, front; missing views skipped).

    Returns the canvas (H, W, 3) float32, the union of the views' fill masks (H, W)
    and each view's fill mask.
    """
    canvas = np.asarray(template, dtype=np.float32)
    fills: dict[str, np.ndarray] = {}
    for name in MERGE_ORDER:
        if name in views:
            # The per-view minor regions share the face between views (the front's stops where the side views see
            # the jaw and temples better); a lone view (a photo) has its own, wider one.
            minor = regions[f"minor_valid_{name}"] if len(views) > 1 else regions["minor_valid_alone"]
            canvas, fills[name] = fill_facial_region(canvas, views[name], regions[f"major_valid_{name}"], minor,
                                                     regions["mouth_contrast"])
    fill = binarize(sum(fills.values(), np.zeros(canvas.shape[:2], np.float32)))
    return canvas, fill, fills


def unreliable_mask(texture: np.ndarray, fill: np.ndarray, regions: Mapping[str, np.ndarray]) -> np.ndarray:
    """Texels to re-synthesise (pipeline.md 2.4 (f)1-2): unfilled centre face, nostril double vision, nostrils.

    texture: (H, W, 3) merged canvas in [0, 255]; fill: (H, W) union of fill masks.
    Double vision: nose-base texels darker than the whole map's mean luma (dilated).
    Returns (H, W) float32 in {0, 1}.
    """
    unfilled = (1.0 - fill) * regions["center_face"]
    luma = rgb_to_yuv(texture)[:, :, 0]
    dark = (luma < luma.mean()).astype(np.float32)
    double_vision = (box_blur(dark, NOSTRIL_DILATE_BOX) > 0).astype(np.float32) * regions["nosal_base"]
    return binarize(unfilled + double_vision + regions["nostril"])


def own_skin_source(texture: np.ndarray, unknown: np.ndarray, box: Box) -> np.ndarray:
    """A Poisson source for a box from the sample itself: the texture just above the box's unknown texels (the
    upper lip over the mouth's opening), shifted down over them by the hole's height.

    texture: (H, W, 3) full map; unknown: (h, w) bool inside ``box``. Returns the (h, w, 3) source patch.
    """
    row0, row1, col0, col1 = box
    rows = np.nonzero(unknown.any(axis=1))[0]
    if rows.size == 0:
        return texture[row0:row1, col0:col1]
    shift = int(rows.max() - rows.min() + 1)
    top = max(0, row0 - shift)
    source = texture[top:top + (row1 - row0), col0:col1]
    return source if source.shape[0] == row1 - row0 else texture[row0:row1, col0:col1]


def closed_lid_source(texture: np.ndarray, unknown: np.ndarray, box: Box) -> np.ndarray:
    """A Poisson source for an eye's box from the sample itself: the grain of the lid skin between the box's top
    and its unknown texels, mirrored down into the hole from the hole's top row.

    The hole's shading comes from its rim through the Poisson fill (a closed lid between the upper lid and the lower
    one); the source adds only the skin's grain (``lid_grain``), so neither the lid's crease or lash line nor the
    brows above FFHQ-UV's eye boxes enter the hole, however tall it is (``own_skin_source``'s shift by the hole's
    height reaches the brows once an eye hole takes the lashes). Rows of the hole deeper than the band is tall get
    no grain (a second mirror image would repeat the first as a zigzag). texture: (H, W, 3) full map; unknown:
    (h, w) bool inside ``box``. Returns the (h, w, 3) float32 source patch (zero, a smooth fill, when the band is
    thinner than ``OWN_SKIN_MIN_BAND``).
    """
    row0, row1, col0, col1 = box
    rows = np.nonzero(unknown.any(axis=1))[0]
    source = np.zeros((row1 - row0, col1 - col0, 3), dtype=np.float32)
    if rows.size == 0:
        return source
    top = row0 + int(rows.min())  # the hole's first row
    band = top - (row0 + FILL_BOX_MARGIN)  # skin rows above it, inside the box
    if band < OWN_SKIN_MIN_BAND:
        return source
    detail = lid_grain(np.asarray(texture[top - band:top, col0:col1], dtype=np.float32))
    depth = np.arange(min(band, row1 - top))  # hole row top + k mirrors band row band - 1 - k
    source[top - row0 + depth] = detail[band - 1 - depth]
    return source


def closed_lips_source(texture: np.ndarray, unknown: np.ndarray, box: Box) -> np.ndarray:
    """A Poisson source for the mouth's box from the sample itself: the lips closed over the opening between them.

    Per column, the upper half of the opening takes the upper lip's grain mirrored down from the opening's top edge,
    the lower half the lower lip's mirrored up from its bottom edge, and a soft darker seam runs where they meet.
    Only grain is copied (``skin_detail`` above ``OWN_SKIN_DETAIL_SIGMA`` less its mean along each row, at most
    ``OWN_SKIN_GRAIN_LIMIT``): the colour comes from the lips along the opening's rim through the Poisson fill, so
    an upper lip thinner than half the opening (mediapipe468's layout opens the mouth wide) does not bring the skin
    above it in, as ``own_skin_source``'s shift by the opening's height did (a pale band and a third lip's edge).
    texture: (H, W, 3) full map; unknown: (h, w) bool inside ``box``. Returns the (h, w, 3) float32 source patch.
    """
    row0, row1, col0, col1 = box
    patch = np.asarray(texture[row0:row1, col0:col1], dtype=np.float32)
    detail = skin_detail(patch, ~unknown, OWN_SKIN_DETAIL_SIGMA)
    # Less its mean along each row: a lip's lines run across the mouth's rows and stay, the lip's border with the
    # skin runs along them and goes (mirrored into the opening, its ramp would climb to the skin's colour).
    across = max(3, round(LIP_GRAIN_ROW_MEAN_1024 * texture.shape[0] / 1024)) | 1  # odd
    detail -= cv2.blur(detail, (across, 1))
    source = np.clip(detail, -OWN_SKIN_GRAIN_LIMIT, OWN_SKIN_GRAIN_LIMIT)
    columns = np.flatnonzero(unknown.any(axis=0))
    if columns.size == 0:
        return source
    height = row1 - row0
    top = unknown[:, columns].argmax(axis=0)  # first and last unknown row of each column
    bottom = height - 1 - unknown[::-1, columns].argmax(axis=0)
    middle = (top + bottom + 1) // 2  # the first row of the lower lip's half
    rows = np.arange(height)[:, None]
    inside = (rows >= top) & (rows <= bottom)
    mirrored = np.where(rows < middle, 2 * top - 1 - rows, 2 * bottom + 1 - rows).clip(0, height - 1)
    grain = source[mirrored, columns[None, :]]  # (h, n, 3)
    # The seam's row, averaged along the mouth so that it runs smoothly where the opening's rows step.
    scale = texture.shape[0] / 1024
    pad = round(LIP_SEAM_SMOOTH_1024 * scale) // 2
    centre = np.convolve(np.pad((top + bottom) / 2.0, pad, mode="edge"), np.full(2 * pad + 1, 1.0 / (2 * pad + 1)),
                         mode="valid")
    sigma = LIP_SEAM_SIGMA_1024 * scale
    grain -= (LIP_SEAM_DEPTH * np.exp(-0.5 * ((rows - centre) / sigma) ** 2))[..., None].astype(np.float32)
    source[:, columns] = np.where(inside[..., None], grain, source[:, columns])
    return source


def lid_grain(skin: np.ndarray) -> np.ndarray:
    """(h, w, 3) float skin -> its grain: ``skin_detail`` above ``OWN_SKIN_DETAIL_SIGMA`` texels minus each row's
    mean (a crease or a brow's edge is a dark row, not grain), at most ``OWN_SKIN_GRAIN_LIMIT`` levels, so strands
    (lash tips, brow hairs) stay faint."""
    detail = skin_detail(skin, np.ones(skin.shape[:2], dtype=bool), OWN_SKIN_DETAIL_SIGMA)
    detail -= detail.mean(axis=1, keepdims=True)
    return np.clip(detail, -OWN_SKIN_GRAIN_LIMIT, OWN_SKIN_GRAIN_LIMIT)


def closed_eye_detail(texture: np.ndarray, seen: np.ndarray, unreliable: np.ndarray, regions: Mapping[str, np.ndarray],
                      boxes: Mapping[str, Box]) -> np.ndarray:
    """A single view's fine skin texture for its closed eye openings: the (H, W, 3) float32 layer to add to the
    Poisson-filled ``texture`` over the ``unreliable`` (H, W) texels of the eyes' boxes, copied from the view's
    ``seen`` (H, W) skin (``own_skin_detail``: pores and mottling), faded in over ``EYE_DETAIL_FEATHER_1024``
    texels from the opening's rim. The fill's own grain (``closed_lid_source``) reaches only as deep into the
    opening as the lid band above it is tall, so without this the closed lids were a smooth, blurred oval."""
    eyes = np.zeros(unreliable.shape, np.float32)
    for name in EYE_FILL_BOXES:
        if name in boxes:
            row0, row1, col0, col1 = boxes[name]
            eyes[row0:row1, col0:col1] = unreliable[row0:row1, col0:col1]
    if not eyes.any():
        return np.zeros(texture.shape, np.float32)
    feather = max(3, round(EYE_DETAIL_FEATHER_1024 * texture.shape[0] / 1024)) | 1  # odd
    weight = box_blur(eyes, feather) * eyes
    detail = own_skin_detail(texture, skin_source(seen, regions), eyes > 0.5)
    return detail * channels(weight, texture.shape[2])


def solve_unreliable(texture: np.ndarray, unreliable: np.ndarray, template: np.ndarray,
                     boxes: Mapping[str, Box], source: str = "template") -> tuple[np.ndarray, np.ndarray]:
    """Poisson-fill the unreliable texels of each box from the raw template's gradients (pipeline.md 2.4 (f)3-5),
    or with ``source="sample"`` from the sample's own skin (``closed_lid_source`` in the eyes' boxes,
    ``closed_lips_source`` in the mouth's, ``own_skin_source`` in the others).

    texture, template: (H, W, 3) float in [0, 255]; unreliable: (H, W) in {0, 1};
    boxes: name -> (row0, row1, col0, col1). Returns the corrected texture (H, W, 3)
    float32 and the solved mask (H, W): every texel of every box counts as solved.
    """
    result = np.array(texture, dtype=np.float32)
    solved = np.zeros(texture.shape[:2], np.float32)
    for name, (row0, row1, col0, col1) in boxes.items():
        mask = np.zeros((row1 - row0, col1 - col0), np.float32)
        inner = (slice(FILL_BOX_MARGIN, -FILL_BOX_MARGIN), slice(FILL_BOX_MARGIN, -FILL_BOX_MARGIN))
        mask[inner] = unreliable[row0:row1, col0:col1][inner]
        patch = texture[row0:row1, col0:col1]
        if source == "sample":
            own = (closed_lid_source if name in EYE_FILL_BOXES
                   else closed_lips_source if name == MOUTH_FILL_BOX else own_skin_source)
            gradients = own(texture, mask > 0.5, (row0, row1, col0, col1))
        else:
            gradients = template[row0:row1, col0:col1]
        result[row0:row1, col0:col1] = poisson_fill(patch, gradients, mask,
                                                    laplacian_matrix(row1 - row0, col1 - col0))
        solved[row0:row1, col0:col1] = 1.0
    return result, solved


def blend_with_template(texture: np.ndarray, reliable: np.ndarray, template: np.ndarray,
                        regions: Mapping[str, np.ndarray], levels: int = LEVELS, own_skin: bool = False) -> np.ndarray:
    """Complete the map with the template outside the reliable region (pipeline.md 2.4 (g)2-6).

    texture, template: (H, W, 3) float in [0, 255]; reliable: (H, W) in {0, 1}.
    Returns (H, W, 3) uint8: the pyramid blend of the texture over the colour-matched
    template, then the raw template's hair over the hair region. ``own_skin`` (a single view): the texture is its
    own skin continued beyond the reliable texels (``continue_own_skin``), which inside the face area
    (``minor_valid_whole``, feathered) is also what the blend fades into.
    """
    template = np.asarray(template, dtype=np.float32)
    matched = match_color_yuv(template, texture, reliable)
    # The colour match is fitted on the face's skin, and the hair, far from those colours, is carried out of range by
    # it: the built template's flat skin gives chroma gains of 1.7, which turn its dark brown hair navy, and the hair
    # override's feathered border showed that as a dark blue rim along the hairline (FFHQ-UV's maps have none). Under
    # that border, which lies inside the hair region, the hair keeps the template's own colours.
    has_hair = bool(regions["hair"].any())  # mediapipe468 has no hair region: nothing to do per sample
    if has_hair:
        hair_zone = box_blur(regions["hair"], HAIR_EDGE_BOX)
        matched += (template - matched) * channels(hair_zone, template.shape[2])
    if own_skin:
        # Beyond the reliable texels the canvas holds the merge's colour-matched template, which the blend's soft
        # weight would show as a pale rim around the seen skin: the continued skin replaces it.
        face = box_blur(regions["minor_valid_whole"], FACE_AREA_FEATHER_BOX)
        if has_hair:  # under the hair's edge the template's hair stays: skin continued into it drew a pale halo
            face *= 1.0 - hair_zone
        texture = continue_own_skin(texture, reliable, regions, face > 0, matched)
        matched = (texture - matched) * channels(face, texture.shape[2]) + matched  # face: texture, else matched
    weight = major_minor_weight(reliable, regions["major_valid_whole"], regions["minor_valid_whole"])
    # FFHQ-UV clips the pyramid blend before the hair override (laplacian_pyramid_blend), so a band-pass overshoot
    # at a bright edge never reaches the hair's feathered border above 255.
    blended = np.clip(pyramid_blend(matched, texture, weight, levels), 0.0, 255.0)
    out = blended
    if has_hair:
        hair = hair_weight(regions["hair"])[:, :, None]
        out = template * hair + blended * (1.0 - hair)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def continue_own_skin(texture: np.ndarray, reliable: np.ndarray, regions: Mapping[str, np.ndarray],
                      area: np.ndarray, far: np.ndarray | None = None) -> np.ndarray:
    """A single view's skin continued into the texels it did not see: the colour of the nearest seen skin
    (``pull_push_fill``: a darker jaw stays dark next to it), relaxing with distance to ``far`` (the colour-matched
    template, ``OWN_SKIN_COLOUR_REACH_1024``; None: no relaxation), plus the sample's own fine texture copied from
    its seen skin (``own_skin_detail``: pores, not an airbrushed average). The seen skin fades into its
    continuation over a narrow band inside its edge (``SEEN_EDGE_FEATHER_1024``), so the mask's staircase outline
    and the darker texels a silhouette leaves there do not show as a seam.
    texture, far: (H, W, 3) float in [0, 255]; reliable: (H, W) in {0, 1}; area: (H, W) bool, where the texture is
    shown (the fine texture is made there only). Returns (H, W, 3) float32 in [0, 255]."""
    width = max(1, round(SEEN_EDGE_FEATHER_1024 * texture.shape[0] / 1024))
    deep = cv2.erode(binarize(reliable), np.ones((2 * width + 1,) * 2, np.uint8))
    real = box_blur(deep, 2 * width + 1) * reliable  # 1 deep inside the seen skin, 0 at its edge and beyond
    detail = own_skin_detail(texture, skin_source(deep, regions), (1.0 - real) * area)
    continued = pull_push_fill(texture, deep)
    if far is not None:
        distance = cv2.distanceTransform((deep < 0.5).astype(np.uint8), cv2.DIST_L2, 5)  # texels from the seen skin
        reach = OWN_SKIN_COLOUR_REACH_1024 * texture.shape[0] / 1024
        nearness = channels(np.exp(-distance / reach), texture.shape[2])
        continued = far + (continued - far) * nearness
    continued += detail
    skin = np.subtract(texture, continued, dtype=np.float32)
    skin *= channels(real, skin.shape[2])
    skin += continued  # texture * real + continued * (1 - real)
    return np.clip(skin, 0.0, 255.0, out=skin)


def near_openings(regions: Mapping[str, np.ndarray], reach: float, boxes: Mapping[str, Box]) -> np.ndarray:
    """(H, W) float32 in {0, 1}: the topology's eye, mouth and nostril regions grown by ``reach`` texels, inside
    the fill ``boxes`` (zero elsewhere: only the boxes are solved). Grown box by box: a 33-texel disk over the
    whole 1024 map took 17 ms a sample."""
    from stages.face.region import disk

    openings = binarize(regions["eye_l"] + regions["eye_r"] + regions["mouth"] + regions["nostril"]).astype(np.uint8)
    radius = max(1, round(reach))
    grown = np.zeros(openings.shape, np.float32)
    for row0, row1, col0, col1 in boxes.values():
        # The box plus the reach around it, so openings just outside the box still grow into it.
        top, left = max(0, row0 - radius), max(0, col0 - radius)
        window = cv2.dilate(openings[top:row1 + radius, left:col1 + radius], disk(radius))
        grown[row0:row1, col0:col1] = window[row0 - top:row1 - top, col0 - left:col1 - left]
    return grown


def complete_texture(views: Mapping[str, UVView], template: np.ndarray, regions: Mapping[str, np.ndarray],
                     boxes: Mapping[str, Box], levels: int = LEVELS) -> CompletedTexture:
    """The whole completion: merge the views, correct the unreliable parts, blend with the template.

    views: name -> UVView for any of left / right / front; template: (H, W, 3) float
    in [0, 255]; regions: the topology's masks; boxes: its Poisson fill regions.
    Several views: FFHQ-UV's correction (nostrils re-synthesised, template gradients);
    one view: the photo's own features are kept and openings filled from its own skin.
    """
    start = time.perf_counter()
    canvas, fill, fills = merge_views(template, views, regions)
    if len(views) == 1:
        # One view: its own texels (not the feathered blend) border the openings, which are all that is solved.
        (view,) = views.values()
        light = erode_view_mask(view.mask, np.ones_like(view.mask))
        # Unseen texels hold the sample's own colour continued (as the blend later fills them), not the merge's
        # template: an eye or mouth box whose rim the view did not see (glasses or hair masked around an eye)
        # takes its Poisson boundary from there, and a template-coloured boundary drew the box's rectangle.
        canvas = np.where(light[..., None] > 0.5, view.texture, pull_push_fill(view.texture, light)).astype(np.float32)
        unreliable = binarize((1.0 - light) * regions["center_face"])
        source = "sample"
    else:
        unreliable = unreliable_mask(canvas, fill, regions)
        source = "template"
    merged = time.perf_counter()
    corrected, solved = solve_unreliable(canvas, unreliable, template, boxes, source)
    if len(views) == 1:
        # Only the openings and their rims are the boxes' to close; the rest of a box the view did not see (glasses
        # or hair masked around an eye) is continued like any unseen skin, or the box's rectangle shows.
        solved *= near_openings(regions, OPENING_REACH_1024 * solved.shape[0] / 1024, boxes)
        corrected += closed_eye_detail(corrected, light, unreliable, regions, boxes)
    poisson = time.perf_counter()
    uv = blend_with_template(corrected, binarize(fill + solved), template, regions, levels,
                             own_skin=len(views) == 1)
    done = time.perf_counter()
    return CompletedTexture(uv=uv, fill_mask=fill, solved_mask=solved, unreliable_mask=unreliable,
                            view_fill_masks=fills,
                            seconds={"merge": merged - start, "poisson": poisson - merged, "blend": done - poisson})
