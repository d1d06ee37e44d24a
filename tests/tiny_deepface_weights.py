"""Write randomly initialised deepface weight files, in deepface's own format, for tests.

deepface's PyTorch networks have fixed sizes (the age and gender models are a full
VGG-Face trunk, about 540 MB each), so the files are real-size; write them once per
test session into a temporary DEEPFACE_HOME.
"""

from __future__ import annotations

from pathlib import Path

from stages.face.deepface_models import WEIGHT_FILES, weight_path


def write_random_deepface_weights(home: Path, models: tuple[str, ...] = tuple(WEIGHT_FILES), seed: int = 0) -> Path:
    """Save deepface's freshly initialised ``base_model()`` state dicts under ``home/.deepface/weights``."""
    import torch
    from deepface.models.demography.pytorch import Age, Emotion, Gender

    builders = {"age": Age.base_model, "gender": Gender.base_model, "emotion": Emotion.base_model}
    torch.manual_seed(seed)
    for name in models:
        path = Path(weight_path(home, name))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(builders[name]().state_dict(), path)
    return home
