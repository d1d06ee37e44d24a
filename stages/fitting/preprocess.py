"""FFHQ-UV's fitting preprocessing (``step1_process_data.py``, pipeline.md section 7): photo -> ``input_data.pt``.

Steps, as ``RGB_Fitting/dataset/fit_dataset.py`` and ``utils/preprocess_utils.py`` do them:
1. 68 landmarks on the photo (y up: ``y_up = H - 1 - y_down``);
2. skin posterior (``skin.py``) and parse mask on the whole photo, as uint8 images;
3. POS: least squares of an affine camera from the 3-D 5-point template to the photo's 5 points, giving a
   translation ``t`` (photo pixels, y up) and scale ``s``; the photo is resized by ``102 / s`` with PIL bicubic
   and a 224 crop is cut around ``t``; the masks go through the same resize and crop;
4. ``M``: the similarity from the crop's 5 points (y down) to ArcFace's 112 template.

``trans_params = [w0, h0, scale, tx, ty]`` (FFHQ-UV keeps tx, ty as 1-element arrays in a numpy object array).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

CROP_SIZE = 224
RESCALE_FACTOR = 102.0  # Deep3D's align_img: the template's unit spans 102 crop pixels
# Deep3D's 5 points from iBUG 68 (0-based): eyes = mean of the two corners, nose tip, mouth corners.
EYE_LEFT_CORNERS, EYE_RIGHT_CORNERS, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = (36, 39), (42, 45), 30, 48, 54
# insightface's ArcFace 112x112 5-point template (x, y down): eyes, nose, mouth corners.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]])
INPUT_KEYS = ("img", "skin_mask", "parse_mask", "lm", "M", "trans_params")


def deep3d_five_points(lm68: np.ndarray) -> np.ndarray:
    """(68, D) landmarks -> (5, D) float64 in the same frame (2-D or 3-D): eye centres, nose tip, mouth corners."""
    lm = np.asarray(lm68, dtype=np.float64)
    return np.stack([lm[list(EYE_LEFT_CORNERS)].mean(0), lm[list(EYE_RIGHT_CORNERS)].mean(0), lm[NOSE_TIP],
                     lm[MOUTH_LEFT], lm[MOUTH_RIGHT]])


def pos(points2d: np.ndarray, template3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Affine camera by least squares, (K, 2) photo points (y up) from (K, 3) template: translation (2,), scale."""
    k = len(points2d)
    a = np.zeros((2 * k, 8))
    a[0::2, 0:3], a[0::2, 3] = template3d, 1.0
    a[1::2, 4:7], a[1::2, 7] = template3d, 1.0
    sol = np.linalg.lstsq(a, points2d.reshape(-1), rcond=None)[0]
    scale = (np.linalg.norm(sol[0:3]) + np.linalg.norm(sol[4:7])) / 2
    return np.array([sol[3], sol[7]]), float(scale)


@dataclass(frozen=True)
class AlignParams:
    """FFHQ-UV's ``trans_params``: photo size (pixels), resize factor, and the crop centre (photo pixels, y up)."""

    width: int
    height: int
    scale: float
    tx: float
    ty: float

    @staticmethod
    def from_trans_params(values) -> AlignParams:
        w0, h0, s, tx, ty = (float(np.asarray(v).reshape(-1)[0]) for v in values)
        return AlignParams(int(w0), int(h0), s, tx, ty)

    def trans_params(self) -> np.ndarray:
        """FFHQ-UV's layout: a (5,) object array ``[w0, h0, s, array([tx]), array([ty])]``."""
        out = np.empty(5, dtype=object)
        out[:] = [self.width, self.height, self.scale, np.array([self.tx]), np.array([self.ty])]
        return out

    def resized(self) -> tuple[int, int]:
        """(w, h) of the resized photo; Deep3D truncates towards zero."""
        return int(self.width * self.scale), int(self.height * self.scale)

    def crop_box(self, size: int = CROP_SIZE) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the crop in the resized photo (PIL box)."""
        w, h = self.resized()
        left = int(w / 2 - size / 2 + (self.tx - self.width / 2) * self.scale)
        up = int(h / 2 - size / 2 + (self.height / 2 - self.ty) * self.scale)
        return left, up, left + size, up + size

    def to_crop(self, points_up: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
        """(N, 2) photo points (y up) -> (N, 2) crop points (y up), Deep3D's landmark transform."""
        w, h = self.resized()
        moved = np.stack([points_up[:, 0] - self.tx + self.width / 2, points_up[:, 1] - self.ty + self.height / 2], 1)
        return moved * self.scale - np.array([w / 2 - size / 2, h / 2 - size / 2])


def align_params(lm68_up: np.ndarray, template5: np.ndarray, width: int, height: int) -> AlignParams:
    """POS alignment of (68, 2) y-up photo landmarks to the (5, 3) template: FFHQ-UV's ``trans_params``."""
    t, s = pos(deep3d_five_points(lm68_up), template5)
    return AlignParams(width, height, RESCALE_FACTOR / s, float(t[0]), float(t[1]))


def resize_and_crop(image: np.ndarray, params: AlignParams, size: int = CROP_SIZE) -> np.ndarray:
    """(H, W[, 3]) uint8 -> (size, size[, 3]) uint8: PIL bicubic resize by ``params.scale``, then the crop."""
    from PIL import Image

    pil = Image.fromarray(image)
    return np.asarray(pil.resize(params.resized(), resample=Image.BICUBIC).crop(params.crop_box(size)))


def arcface_similarity(lm68_up: np.ndarray, height: int = CROP_SIZE) -> np.ndarray:
    """(2, 3) similarity from crop pixels (y down) to ArcFace's 112 template, from (68, 2) y-up crop landmarks."""
    from skimage.transform import SimilarityTransform

    five = deep3d_five_points(lm68_up)
    five[:, 1] = height - 1 - five[:, 1]
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = SimilarityTransform.from_estimate(five, ARCFACE_TEMPLATE)
        ok = bool(tform)
    else:
        tform = SimilarityTransform()
        ok = tform.estimate(five, ARCFACE_TEMPLATE)
    if not ok or np.linalg.det(tform.params) == 0:  # FFHQ-UV falls back to the identity
        return np.eye(3)[:2]
    return tform.params[:2]


@dataclass
class FitInput:
    """The preprocessed photo, FFHQ-UV's ``input_data.pt`` in numpy.

    ``image`` (224, 224, 3) float32 RGB in [0, 1]; ``skin`` and ``parse`` (224, 224) float32 in [0, 1];
    ``landmarks`` (68, 2) float32 crop pixels, y up; ``arcface`` (2, 3) float32; ``params`` the alignment.
    """

    image: np.ndarray
    skin: np.ndarray
    parse: np.ndarray
    landmarks: np.ndarray
    arcface: np.ndarray
    params: AlignParams

    def landmarks_down(self) -> np.ndarray:
        """(68, 2) crop landmarks with y down (the renderer's pixel frame)."""
        return np.stack([self.landmarks[:, 0], CROP_SIZE - 1 - self.landmarks[:, 1]], 1)


def preprocess(photo: np.ndarray, lm68_down: np.ndarray, parse_mask: np.ndarray, template5: np.ndarray) -> FitInput:
    """FFHQ-UV's preprocessing of an (H, W, 3) uint8 photo with its (68, 2) y-down landmarks.

    ``parse_mask`` (H, W) uint8 (255 = face skin to fit) on the photo; ``template5`` the (5, 3) 3-D template.
    """
    from stages.fitting.skin import skin_mask_uint8

    h, w = photo.shape[:2]
    lm_up = np.stack([lm68_down[:, 0], h - 1 - lm68_down[:, 1]], 1).astype(np.float64)
    params = align_params(lm_up, template5, w, h)
    return crop_inputs(photo, lm_up, skin_mask_uint8(photo), parse_mask, params)


def crop_inputs(photo: np.ndarray, lm68_up: np.ndarray, skin: np.ndarray, parse: np.ndarray,
                params: AlignParams) -> FitInput:
    """Resize and crop the photo and its uint8 masks by ``params``; landmarks to the crop; ArcFace ``M``."""
    lm = params.to_crop(lm68_up).astype(np.float32)
    return FitInput(
        image=resize_and_crop(photo, params).astype(np.float32) / 255.0,
        skin=resize_and_crop(skin, params).astype(np.float32) / 255.0,
        parse=resize_and_crop(parse, params).astype(np.float32) / 255.0,
        landmarks=lm,
        arcface=arcface_similarity(lm).astype(np.float32),
        params=params,
    )


def to_ffhq_dict(data: FitInput) -> dict:
    """FFHQ-UV's dict: ``img`` [1,3,224,224], ``skin_mask``/``parse_mask`` [1,1,224,224], ``lm`` [1,68,2] y up,
    ``M`` [1,2,3] (float32 tensors) and ``trans_params`` (numpy object array)."""
    import torch

    return {
        "img": torch.from_numpy(data.image.transpose(2, 0, 1)[None].copy()),
        "skin_mask": torch.from_numpy(data.skin[None, None].copy()),
        "parse_mask": torch.from_numpy(data.parse[None, None].copy()),
        "lm": torch.from_numpy(data.landmarks[None].copy()),
        "M": torch.from_numpy(data.arcface[None].copy()),
        "trans_params": data.params.trans_params(),
    }


def save_input_data(data: FitInput) -> bytes:
    """``input_data.pt`` bytes (``torch.save`` of ``to_ffhq_dict``)."""
    import torch

    buffer = io.BytesIO()
    torch.save(to_ffhq_dict(data), buffer)
    return buffer.getvalue()


def load_input_data(file) -> FitInput:
    """Read an ``input_data.pt`` (ours or FFHQ-UV's) through the restricted loader; never a plain unpickle."""
    from stages.networks.safe_pickle import load_torch_with_numpy

    raw = load_torch_with_numpy(file)
    missing = [k for k in INPUT_KEYS if k not in raw]
    if missing:
        raise ValueError(f"input data lacks {missing}")
    return FitInput(
        image=raw["img"][0].permute(1, 2, 0).numpy().astype(np.float32),
        skin=raw["skin_mask"][0, 0].numpy().astype(np.float32),
        parse=raw["parse_mask"][0, 0].numpy().astype(np.float32),
        landmarks=raw["lm"][0].numpy().astype(np.float32),
        arcface=raw["M"][0].numpy().astype(np.float32),
        params=AlignParams.from_trans_params(raw["trans_params"]),
    )
