"""The open profile's textures before optimisation: the photo unwrapped into the UV map, and stage 1's template.

The fitted pose lives in the 224 crop; the crop is a scale and shift of the photo (``AlignParams``), so the same
pose seen through a camera with the focal and centre divided by the crop's scale projects the head into the full
photo, and the unwrap samples the photo at its own resolution (``stages/unwrap.py``'s ``unwrap_view``). A single
view fills its unseen side from the mirror image, and the completion (``stages/texture/merge.py``) blends it into
the template outside the face, as the photo profile does.
"""

from __future__ import annotations

import numpy as np

from stages.fitting.preprocess import CROP_SIZE, AlignParams
from stages.geometry.fitting import Fit, ViewPose

PHOTO_VIEW = "front"


def crop_offset(params: AlignParams) -> tuple[float, float]:
    """(ox, oy) with ``crop_down = scale * photo_down + (ox, oy)`` (y-down pixels of both)."""
    w, h = params.resized()
    bx = params.scale * (params.width / 2 - params.tx) - (w / 2 - CROP_SIZE / 2)
    by = params.scale * (params.height / 2 - params.ty) - (h / 2 - CROP_SIZE / 2)
    return bx, (CROP_SIZE - 1) - params.scale * (params.height - 1) - by


def pose_in_photo(pose: ViewPose, params: AlignParams) -> ViewPose:
    """A crop-frame camera pose -> the same pose seen in the full photo's pixels."""
    ox, oy = crop_offset(params)
    s = params.scale
    return ViewPose(pose.rotation, pose.translation, pose.focal / s, ((pose.centre[0] - ox) / s,
                                                                        (pose.centre[1] - oy) / s))


def to_photo(points_crop: np.ndarray, params: AlignParams) -> np.ndarray:
    """(N, 2) y-down crop pixels -> (N, 2) y-down photo pixels."""
    ox, oy = crop_offset(params)
    return (points_crop - np.array([ox, oy])) / params.scale


def unwrap_photo(topology, fit: Fit, photo: np.ndarray, lm68_photo: np.ndarray, region: np.ndarray,
                 params: AlignParams):
    """The photo sampled into the UV map: a ``stages.texture.merge.UVView`` ((S, S, 3) float, (S, S) mask)."""
    from stages.texture.merge import UVView
    from stages.unwrap import UnwrapSettings, ViewInput, symmetric_fill, unwrap_view

    photo_fit = Fit(fit.vertices, fit.coefficients, {PHOTO_VIEW: pose_in_photo(fit.poses[PHOTO_VIEW], params)},
                    {PHOTO_VIEW: fit.errors_px[PHOTO_VIEW] / params.scale})
    view = unwrap_view(topology, photo_fit, ViewInput(PHOTO_VIEW, photo, lm68_photo, region), UnwrapSettings())
    symmetric_fill(topology, view)
    valid = (view.mask > 127).astype(np.float32)
    return UVView(view.texture.astype(np.float32) * valid[:, :, None], valid)


def completed_texture(view, template: np.ndarray, topology) -> np.ndarray:
    """The unwrapped view blended into the template: (S, S, 3) uint8 (the stage 2 starting texture)."""
    from stages.texture.merge import complete_texture

    boxes = {r.name: (r.top, r.bottom, r.left, r.right) for r in topology.fill_regions()}
    return complete_texture({PHOTO_VIEW: view}, template, topology.masks(), boxes).uv


def matched_template(template: np.ndarray, view) -> np.ndarray:
    """Stage 1's texture: the template recoloured to the photo's face (YUV statistics over the unwrapped texels),
    the open counterpart of Deep3D's linear texture. (S, S, 3) uint8."""
    from stages.texture.color import match_color_yuv

    matched = match_color_yuv(template, view.texture, view.mask, spread_divisor=1.0)
    return np.clip(np.rint(matched), 0, 255).astype(np.uint8)
