"""deepface age / gender / emotion from a local DEEPFACE_HOME with random weights in deepface's format."""

from __future__ import annotations

import numpy as np
import pytest

from stages.errors import ConfigError
from stages.face.deepface_models import (
    EMOTION_LABELS,
    DeepfaceModels,
    deepface_home,
    face_input,
    missing_weights,
    weight_path,
)
from tests.tiny_deepface_weights import write_random_deepface_weights


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return write_random_deepface_weights(deepface_home(tmp_path_factory.mktemp("weights")))


@pytest.fixture(scope="module")
def models(home):
    return DeepfaceModels(home)


def _faces() -> list[np.ndarray]:
    from skimage import data

    astronaut = data.astronaut()
    return [astronaut, astronaut[:, ::-1].copy(), np.ascontiguousarray(astronaut[40:300, 120:360])]


def test_missing_weights_are_a_config_error(tmp_path):
    assert len(missing_weights(None, ("age", "emotion"))) == 2
    assert missing_weights(tmp_path, ("gender",)) == [str(weight_path(tmp_path, "gender"))]
    with pytest.raises(ConfigError, match="Weights"):
        DeepfaceModels(tmp_path, models=("emotion",))


def test_face_input_is_deepface_format():
    face = face_input(_faces()[0], box=(180, 70, 270, 175), expand=0.1)
    assert face.shape == (224, 224, 3) and face.dtype == np.float32
    assert 0.0 <= face.min() and face.max() <= 1.0


def test_random_weights_load_and_give_valid_outputs(models):
    faces = [face_input(image) for image in _faces()]
    batch = models.analyze(faces)
    assert len(batch) == 3
    for result in batch:
        assert 0.0 <= result.age <= 100.0
        assert 0.0 <= result.male_probability <= 1.0
        assert result.emotion.shape == (len(EMOTION_LABELS),)
        assert result.emotion.sum() == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= result.happy <= 1.0
    # Batching does not change a face's reading.
    single = models.analyze([faces[2]])[0]
    assert single.age == pytest.approx(batch[2].age, abs=1e-3)
    np.testing.assert_allclose(single.emotion, batch[2].emotion, atol=1e-5)
    assert models.happy_probability(_faces()[2]) == pytest.approx(batch[2].happy, abs=1e-5)


def test_matches_deepface_analyze_on_the_same_weights(models, home, monkeypatch):
    """Our crop-free input equals DeepFace.analyze with the 'skip' detector, on the same files."""
    from deepface import DeepFace

    monkeypatch.setenv("DEEPFACE_HOME", str(home))
    image = _faces()[2]
    ours = models.analyze([face_input(image)])[0]
    theirs = DeepFace.analyze(image[:, :, ::-1].copy(), actions=["age", "gender", "emotion"],
                              detector_backend="skip", enforce_detection=False, silent=True)[0]
    assert int(ours.age) == theirs["age"]
    assert ours.male_probability * 100 == pytest.approx(theirs["gender"]["Man"], abs=1e-3)
    assert ours.happy * 100 == pytest.approx(theirs["emotion"]["happy"], abs=1e-3)
