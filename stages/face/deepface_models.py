"""Age, gender and emotion with deepface's PyTorch models, from a local weights folder (no downloads).

The folder follows deepface's own layout: ``DEEPFACE_HOME/.deepface/weights/<file>``
with ``DEEPFACE_HOME = <models.weights_dir>/deepface``. The networks and the
weight loading are deepface's (``base_model()`` + ``load_model_weights``, a
``torch.load(weights_only=True)``); the weight paths are passed explicitly so deepface
never tries to download. The face crop replaces deepface's detectors: the landmark
box, resized with deepface's black-padded ``resize_image`` to 224, BGR in [0,1], as
``DeepFace.analyze`` feeds its models.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from stages.errors import ConfigError

DEEPFACE_SUBDIR = "deepface"  # DEEPFACE_HOME inside models.weights_dir
WEIGHT_FILES: dict[str, str] = {  # deepface 0.0.103 PyTorch backend file names
    "age": "age_model_weights.pth",
    "gender": "gender_model_weights.pth",
    "emotion": "facial_expression_model_weights.pth",
}
INPUT_SIZE = 224  # deepface's VGG-Face input; the emotion model then uses a 48x48 gray copy
EMOTION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # deepface's order
HAPPY = EMOTION_LABELS.index("happy")
MAN = 1  # deepface's GENDER_LABELS = ["Woman", "Man"]


def deepface_home(weights_dir: Union[str, Path]) -> str:
    """DEEPFACE_HOME for a weights folder (a local path or an fsspec URL)."""
    return posixpath.join(str(weights_dir), DEEPFACE_SUBDIR)


def weight_path(home: Union[str, Path], model: str) -> str:
    """Where deepface keeps the weights of ``model`` (age | gender | emotion) under DEEPFACE_HOME."""
    return posixpath.join(str(home), ".deepface", "weights", WEIGHT_FILES[model])


def missing_weights(home: Optional[Union[str, Path]], models: tuple[str, ...]) -> list[str]:
    """The weight files (as paths or URLs) of ``models`` that do not exist; all of them when ``home`` is None."""
    from stages.networks import weight_exists

    if home is None:
        return [f"<models.weights_dir>/{DEEPFACE_SUBDIR}/.deepface/weights/{WEIGHT_FILES[m]}" for m in models]
    return [weight_path(home, m) for m in models if not weight_exists(weight_path(home, m))]


def face_input(rgb: np.ndarray, box: Optional[tuple[float, float, float, float]] = None,
               expand: float = 0.0) -> np.ndarray:
    """deepface's model input from an (H, W, 3) uint8 RGB image: (224, 224, 3) float32 BGR in [0,1].

    ``box`` (x0, y0, x1, y1) pixels of the face (None = whole image), grown by
    ``expand`` of its size on each side and clipped to the image.
    """
    from deepface.modules.preprocessing import resize_image

    height, width = rgb.shape[:2]
    if box is None:
        crop = rgb
    else:
        x0, y0, x1, y1 = box
        dx, dy = (x1 - x0) * expand, (y1 - y0) * expand
        left, top = max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy)))
        right, bottom = min(width, int(np.ceil(x1 + dx))), min(height, int(np.ceil(y1 + dy)))
        if right - left < 2 or bottom - top < 2:
            raise ValueError(f"face box {box} is empty inside the {width}x{height} image")
        crop = rgb[top:bottom, left:right]
    bgr01 = crop[:, :, ::-1].astype(np.float32) / 255.0
    return resize_image(np.ascontiguousarray(bgr01), (INPUT_SIZE, INPUT_SIZE))[0]


@dataclass(frozen=True)
class FaceAttributes:
    """deepface's reading of one face; None for a model that was not loaded.

    ``age`` years (expected value over 0..100); ``male_probability`` in [0,1];
    ``emotion`` (7,) probabilities in EMOTION_LABELS order.
    """

    age: Optional[float]
    male_probability: Optional[float]
    emotion: Optional[np.ndarray]

    @property
    def happy(self) -> Optional[float]:
        """Probability of "happy" in [0,1] (FFHQ-UV's Expression scale)."""
        return None if self.emotion is None else float(self.emotion[HAPPY])


class DeepfaceModels:
    """deepface's age / gender / emotion networks, loaded once (per actor) from DEEPFACE_HOME."""

    def __init__(self, home: Union[str, Path], models: tuple[str, ...] = ("age", "gender", "emotion"),
                 device: str = "cpu"):
        import torch
        from deepface.models.demography.pytorch import Age, Emotion, Gender
        from deepface.models.facial_recognition.pytorch.TorchFacialRecognition import load_model_weights

        from stages.networks import local_weight_file

        unknown = sorted(set(models) - set(WEIGHT_FILES))
        if unknown:
            raise ConfigError(f"unknown deepface model(s) {unknown}; known: {sorted(WEIGHT_FILES)}")
        missing = missing_weights(home, models)
        if missing:
            raise ConfigError(f"deepface weights not found: {', '.join(missing)}; see README section 'Weights'")
        builders = {"age": Age.base_model, "gender": Gender.base_model, "emotion": Emotion.base_model}
        self.device = torch.device(device)
        self.nets = {}
        for name in models:
            try:
                net = load_model_weights(model=builders[name](), weight_file=local_weight_file(weight_path(home, name)))
            except (ValueError, RuntimeError) as error:
                raise ConfigError(f"deepface {name} weights {weight_path(home, name)} do not load: {error}") from error
            self.nets[name] = net.to(self.device).eval()

    def analyze(self, faces: list[np.ndarray]) -> list[FaceAttributes]:
        """Read a batch of ``face_input`` arrays ((224, 224, 3) float32 BGR in [0,1])."""
        import torch

        batch = np.stack(faces).astype(np.float32)
        results: dict[str, np.ndarray] = {}
        with torch.no_grad():
            if "age" in self.nets or "gender" in self.nets:
                tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)
                for name in ("age", "gender"):
                    if name in self.nets:
                        results[name] = self.nets[name](tensor).cpu().numpy()
            if "emotion" in self.nets:
                results["emotion"] = self.nets["emotion"](self.emotion_input(batch)).cpu().numpy()
        ages = np.arange(results["age"].shape[1]) if "age" in results else None
        out = []
        for i in range(len(faces)):
            emotion = results["emotion"][i] if "emotion" in results else None
            out.append(FaceAttributes(
                age=float(results["age"][i] @ ages) if ages is not None else None,
                male_probability=float(results["gender"][i][MAN]) if "gender" in results else None,
                emotion=None if emotion is None else (emotion / emotion.sum()).astype(np.float32),
            ))
        return out

    def happy_probability(self, rgb: np.ndarray, box: Optional[tuple[float, float, float, float]] = None) -> float:
        """P(happy) in [0,1] of the face in an (H, W, 3) uint8 RGB image (``box`` as in ``face_input``)."""
        if "emotion" not in self.nets:
            raise ConfigError("the deepface emotion model is not loaded")
        return float(self.analyze([face_input(rgb, box)])[0].happy)

    def emotion_input(self, batch: np.ndarray):
        """deepface's emotion preprocessing: BGR -> gray -> 48x48, as (N, 1, 48, 48) tensor."""
        import cv2
        import torch

        gray = np.stack([cv2.resize(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), (48, 48)) for face in batch])
        return torch.from_numpy(gray[:, None].astype(np.float32)).to(self.device)
