"""The attribute stage: StyleFlow's 17-dim condition vector of each face, every value with its provenance.

FFHQ-UV step 2 (pipeline.md sections 2.2 and 6): ``[9 SH light | Gender, Glasses, Yaw,
Pitch, Baldness, Beard, Age, Expression]`` in FFHQ-UV's units (1 = male, 0/1, degrees,
degrees, [0,1], [0,1], years, smile [0,1]).

Which image is read (``input``):
- ``photo`` (photo profile): the source photo; the face is detected (``landmarks``:
  mediapipe, or dlib's 68 points like FFHQ-UV), FFHQ-aligned and written as output
  ``aligned`` (``aligned_size``, or the photo's own crop resolution when smaller);
  everything is measured on the aligned face (mediapipe);
- ``inversion`` (ffhq-uv profile): the inversion stage's 1024 G(w), as FFHQ-UV does.

Where each value comes from (provenance strings in ``attribute_provenance``):
- light: ``dpr`` (DPR's estimate, FFHQ-UV's method) or ``analytic_sh`` (SH fitted to the
  face's landmark-mesh normals, ``stages.lighting.analytic``; DC includes skin albedo);
- Yaw, Pitch: ``mediapipe_pose`` (``stages.face.pose``, Face-API signs) or ``import``;
- Gender, Age, Expression: ``deepface`` (P(man) > 0.5, expected age, P(happy)),
  ``import``, ``default``, or ``unavailable`` (NaN) when deepface is optional and has
  no weights;
- Glasses: ``glasses_bridge`` (``stages.face.glasses``: a frame's bridge across the nose between the eyes; 1 or
  0, the contrast it measured in ``attribute_glasses_contrast``), ``import`` or ``default``. It matters to the
  edit stage, whose Glasses := 0 edit removes glasses only from a face whose condition says it wears them;
- Baldness, Beard: ``import`` or ``default``.
``import`` reads Face-API detections in the DCGM ffhq-features format by sample id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np
import pyarrow as pa

from stages.base import PHOTO, Sample, Stage, StageResult, StageSettings, bounded, configured_weights_dir
from stages.condition import ATTRIBUTE_NAMES, NUM_LIGHT
from stages.errors import ConfigError, SampleError
from stages.face.glasses import bridge_contrast, contrast_shows_glasses
from stages.face.landmarks import LandmarkBackend, MultiFacePolicy
from stages.inversion import INVERSION
from stages.networks import dpr_weights
from stages.views import ALIGNED

# Defaults when a field is configured as "default": the medians of StyleFlow's own
# training attributes (StyleFlow data/attributes.npy, 1000 faces), except the pose
# (frontal) -- a neutral, typical face in the flow's units.
DEFAULTS: dict[str, float] = {"Gender": 0.0, "Glasses": 0.0, "Yaw": 0.0, "Pitch": 0.0, "Baldness": 0.04,
                              "Beard": 0.0, "Age": 31.0, "Expression": 1.0}
# Choice settings (omegaconf checks them at config load). Where each attribute may come from:
MeasuredSource = Literal["deepface", "import", "default"]  # Gender, Age, Expression
PoseSource = Literal["pose", "import", "default"]  # Yaw, Pitch
GlassesSource = Literal["detect", "import", "default"]
OtherSource = Literal["import", "default"]  # Baldness, Beard: no measurement of ours
AttributeInput = Literal["photo", "inversion"]
# Also the relight stage's ``method``. ``auto``: DPR when its weights file is in models.weights_dir, else analytic.
LightingMethod = Literal["dpr", "analytic", "auto"]
DeepfaceNeed = Literal["required", "optional"]
DEEPFACE_MODEL_OF = {"Gender": "gender", "Age": "age", "Expression": "emotion"}
MIN_FACE_SIZE = 64  # FFHQ quad side in source pixels below which the face is too small to measure

# Provenance strings.
FROM_DPR, FROM_ANALYTIC, FROM_POSE, FROM_DEEPFACE = "dpr", "analytic_sh", "mediapipe_pose", "deepface"
FROM_IMPORT, FROM_DEFAULT, UNAVAILABLE = "import", "default", "unavailable"
FROM_GLASSES_BRIDGE = "glasses_bridge"

# Error codes of this stage (README's error table); no_face / multiple_faces come from
# stages.face.landmarks, attr_import_* from stages.attributes_import.
MISSING_INPUT = "attribute_missing_input"
FACE_TOO_SMALL = "face_too_small"

# The manifest field later stages read (StyleFlow's condition, ``stages.condition``'s layout).
ATTRIBUTE_VECTOR = "attribute_vector"


@dataclass
class AttributeSettings(StageSettings):
    # photo (detect + align the source photo) | inversion (the inversion stage's output)
    input: AttributeInput = "photo"
    # photo input: side of the aligned face, at most (less if the photo's crop is smaller)
    aligned_size: int = bounded(1024, low=MIN_FACE_SIZE)
    multiple_faces: MultiFacePolicy = "largest"  # largest | reject (error multiple_faces)
    # photo input: landmarks that align the photo, mediapipe | dlib (optional package)
    landmarks: LandmarkBackend = "mediapipe"
    dlib_predictor: Optional[str] = None  # dlib's 68-point model, as stages.inversion.dlib_predictor
    max_faces: int = bounded(4, low=1)  # faces the detector may report (>1 so that "several faces" is visible)
    lighting: LightingMethod = "dpr"  # dpr (needs dpr_model/trained_model_03.t7) | analytic | auto
    deepface: DeepfaceNeed = "required"  # required (missing weights = config error) | optional (fields become NaN)
    face_expand: float = bounded(0.0, low=0)  # deepface crop: landmark box grown by this fraction per side
    import_path: Optional[str] = None  # DCGM ffhq-features folder of <id>.json or .jsonl(.gz); any fsspec URL
    # Source of each attribute (see the module docstring for the allowed values).
    source_gender: MeasuredSource = "deepface"
    source_glasses: GlassesSource = "detect"
    source_yaw: PoseSource = "pose"
    source_pitch: PoseSource = "pose"
    source_baldness: OtherSource = "default"
    source_beard: OtherSource = "default"
    source_age: MeasuredSource = "deepface"
    source_expression: MeasuredSource = "deepface"

    def sources(self) -> dict[str, str]:
        """Attribute name -> configured source."""
        return {name: getattr(self, f"source_{name.lower()}") for name in ATTRIBUTE_NAMES}


def lighting_method(method: LightingMethod, weights_dir: Optional[str]) -> str:
    """The method that runs: ``dpr`` or ``analytic`` as configured; ``auto`` is ``dpr`` when DPR's weights file is
    found under ``weights_dir`` (a path or URL), ``analytic`` otherwise. Each worker decides when its stage sets up;
    the manifest's ``relight_method`` and ``attribute_provenance`` say which one made a map."""
    if method != "auto":
        return method
    try:
        dpr_weights(weights_dir, "auto")
    except ConfigError:
        return "analytic"
    return "dpr"


def dpr_relighter(method: LightingMethod, context: Any, option: str) -> Any:
    """DPR's network with its pre/post-processing (``DPRRelighter``, on the stage context's device) when ``method``
    comes out as ``dpr`` (``lighting_method``), else None; ``option`` is the config key that chose it, quoted if the
    file is missing. Shared by the attribute stage (its light estimate) and the relight stage."""
    if lighting_method(method, context.weights_dir) != "dpr":
        return None
    from stages.networks import local_weight_file
    from stages.networks.dpr import DPRRelighter, load_dpr

    location = dpr_weights(context.weights_dir, f"{option}={method}")
    return DPRRelighter(load_dpr(local_weight_file(location), context.device), device=context.device,
                        fp16=bool(context.config.models.fp16))


def deepface_fields(settings: AttributeSettings) -> list[str]:
    """Attributes configured to come from deepface."""
    return [name for name, source in settings.sources().items() if source == "deepface"]


class AttributeStage(Stage):
    """Measure the 17-dim StyleFlow condition of each face."""

    name = "attribute"
    Settings = AttributeSettings
    manifest_fields = (
        pa.field(ATTRIBUTE_VECTOR, pa.list_(pa.float32())),  # 17: 9 SH (DPR order) + 8 attributes
        pa.field("attribute_provenance", pa.list_(pa.string())),  # 17: where each value came from
        pa.field("attribute_roll", pa.float32()),  # degrees, Face-API sign (counter-clockwise > 0)
        pa.field("attribute_face_box", pa.list_(pa.float32())),  # x0, y0, x1, y1 pixels of the measured image
        pa.field("attribute_male_probability", pa.float32()),  # deepface; null when not run
        pa.field("attribute_emotion", pa.list_(pa.float32())),  # deepface's 7 probabilities; null when not run
        # luma levels of the bridge across the nose (glasses above stages.face.glasses.WEARS_GLASSES_CONTRAST);
        # null unless source_glasses is detect
        pa.field("attribute_glasses_contrast", pa.float32()),
    )

    outputs = (ALIGNED, ATTRIBUTE_VECTOR)

    @classmethod
    def reads(cls, settings: StageSettings) -> tuple[str, ...]:
        """The source photo, or (``input: inversion``) the inversion stage's image."""
        assert isinstance(settings, AttributeSettings)
        return (INVERSION,) if settings.input == "inversion" else (PHOTO,)

    @classmethod
    def writes(cls, settings: StageSettings) -> tuple[str, ...]:
        assert isinstance(settings, AttributeSettings)
        return cls.outputs if settings.input == "photo" else (ATTRIBUTE_VECTOR,)

    @classmethod
    def preflight(cls, settings: StageSettings, config: Any) -> None:
        """Check the DPR file, the deepface weights and the import file, without loading models."""
        from stages.face.deepface_models import deepface_home, missing_weights
        from stages.face.detectors import check_backend

        assert isinstance(settings, AttributeSettings)
        weights_dir = configured_weights_dir(config)
        check_backend("stages.attribute", settings.landmarks, settings.dlib_predictor, weights_dir)
        if settings.lighting == "dpr":  # auto falls back to analytic instead
            dpr_weights(weights_dir, "stages.attribute.lighting=dpr")
        models = tuple(sorted({DEEPFACE_MODEL_OF[n] for n in deepface_fields(settings)}))
        if models and settings.deepface == "required":
            missing = missing_weights(deepface_home(weights_dir) if weights_dir else None, models)
            if missing:
                raise ConfigError(f"missing weights file(s) {', '.join(missing)} (deepface {'/'.join(models)}); "
                                  "see README section 'Weights', or take those fields from an import "
                                  "(stages.attribute.source_<field>=import)")
        if "import" in settings.sources().values():
            if not settings.import_path:
                raise ConfigError("stages.attribute.import_path is required when a field's source is 'import'")
            import fsspec

            fs, root = fsspec.core.url_to_fs(settings.import_path)
            if not fs.exists(root):
                raise ConfigError(f"stages.attribute.import_path {settings.import_path} does not exist")

    def setup(self) -> None:
        """Landmarker, DPR or nothing for the light, deepface models, the import table."""
        from stages.face.deepface_models import DeepfaceModels, deepface_home, missing_weights
        from stages.face.detectors import make_detector
        from stages.face.landmarks import FaceLandmarker

        settings: AttributeSettings = self.settings
        weights_dir = self.context.weights_dir
        # Measurements (pose, light, deepface box) use mediapipe's 468 points; only the photo's alignment follows
        # the ``landmarks`` setting.
        self.landmarker = FaceLandmarker(max_faces=settings.max_faces)
        self.aligner = self.landmarker
        if settings.input == "photo" and settings.landmarks != "mediapipe":
            self.aligner = make_detector(settings.landmarks, settings.max_faces, settings.dlib_predictor, weights_dir)
        self.relighter = dpr_relighter(settings.lighting, self.context, "stages.attribute.lighting")
        self.deepface = None
        models = tuple(sorted({DEEPFACE_MODEL_OF[n] for n in deepface_fields(settings)}))
        home = deepface_home(weights_dir) if weights_dir else None
        if models and not missing_weights(home, models):
            self.deepface = DeepfaceModels(home, models, device=self.context.device)
        elif models and settings.deepface == "required":
            raise ConfigError(f"missing deepface weights {missing_weights(home, models)}; see README section 'Weights'")
        self.importer = None
        if "import" in settings.sources().values():
            from stages.attributes_import import AttributeImport

            self.importer = AttributeImport(settings.import_path)

    def process(self, sample: Sample) -> StageResult:
        from stages.face.pose import head_pose

        settings: AttributeSettings = self.settings
        rgb = self._measured_image(sample)
        face = self.landmarker.detect_one(rgb, settings.multiple_faces)
        pose = head_pose(face.points)
        light, light_source = self._light(rgb, face.points)
        imported = self.importer.get(sample.id) if self.importer is not None else None

        reading = None
        if self.deepface is not None:
            from stages.face.deepface_models import face_input

            reading = self.deepface.analyze([face_input(rgb, face.box, settings.face_expand)])[0]
        measured = {"Yaw": pose.yaw, "Pitch": pose.pitch}
        contrast = None
        if settings.source_glasses == "detect":
            contrast = bridge_contrast(rgb, face.points[:, :2])
            measured["Glasses"] = float(contrast_shows_glasses(contrast))
        if reading is not None:
            # FFHQ-UV's Gender is Face-API's label: 1 for male.
            gender = None if reading.male_probability is None else float(reading.male_probability > 0.5)
            measured.update({"Gender": gender, "Age": reading.age, "Expression": reading.happy})

        values, provenance = list(map(float, light)), [light_source] * NUM_LIGHT
        for name, source in settings.sources().items():
            if source == "import":
                value, origin = imported.values[name], FROM_IMPORT
            elif source == "default":
                value, origin = DEFAULTS[name], FROM_DEFAULT
            elif source == "pose":
                value, origin = measured[name], FROM_POSE
            elif source == "detect":
                value, origin = measured[name], FROM_GLASSES_BRIDGE
            elif measured.get(name) is not None:
                value, origin = measured[name], FROM_DEEPFACE
            else:
                value, origin = math.nan, UNAVAILABLE
            values.append(float(value))
            provenance.append(origin)
        roll = imported.roll if imported is not None and settings.source_yaw == "import" else pose.roll
        return StageResult(fields={
            ATTRIBUTE_VECTOR: np.asarray(values, dtype=np.float32),
            "attribute_provenance": provenance,
            "attribute_roll": float(roll),
            "attribute_face_box": np.asarray(face.box, dtype=np.float32),
            "attribute_male_probability": None if reading is None else reading.male_probability,
            "attribute_emotion": None if reading is None or reading.emotion is None else reading.emotion,
            "attribute_glasses_contrast": contrast,
        })

    def _measured_image(self, sample: Sample) -> np.ndarray:
        """The (H, W, 3) uint8 RGB image the attributes are measured on (writes ``aligned`` for photos)."""
        settings: AttributeSettings = self.settings
        if settings.input == "inversion":
            if INVERSION not in sample.outputs:
                raise SampleError(MISSING_INPUT, f"no {INVERSION!r} image (enable the inversion stage first)")
            return self.context.read_image(sample.outputs[INVERSION].path)
        from stages.face.align import align_face, ffhq_quad
        from stages.face.detectors import ffhq_points

        photo = self.context.read_source_image(sample)
        five = ffhq_points(self.aligner.detect_one(photo, settings.multiple_faces).points)
        _, qsize = ffhq_quad(five[0], five[1], five[3], five[4])
        if qsize < MIN_FACE_SIZE:
            raise SampleError(FACE_TOO_SMALL, f"the face spans {qsize:.0f} px; at least {MIN_FACE_SIZE} needed")
        aligned = align_face(photo, five, output_size=min(settings.aligned_size, int(round(qsize))))
        self.context.write_image(sample, ALIGNED, aligned.image)
        return aligned.image

    def _light(self, rgb: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, str]:
        """(9,) SH lighting of the face in DPR's order, and its provenance."""
        if self.relighter is not None:
            return self.relighter.estimate([np.ascontiguousarray(rgb[:, :, ::-1])])[0], FROM_DPR
        from stages.lighting.analytic import fit_shading_or_fail

        return fit_shading_or_fail(rgb, points).sh, FROM_ANALYTIC

