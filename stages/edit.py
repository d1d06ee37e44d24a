"""The edit stage: StyleFlow normalisation of the inverted face and FFHQ-UV's three views.

FFHQ-UV step 3 (pipeline.md 2.3, networks.md 3, ``run_styleflow_editing.py``), per sample:
1. z = F(w | a) with the inversion's W+ and the attribute stage's 17-dim condition a.
2. Kept edits, each replacing only its W+ rows and re-encoding z: light := [1,0,...,0]
   (delight), Glasses 0, Yaw 0, Pitch 0, Baldness 1.
3. Expression walk outside the flow: w += alpha * d on all 18 rows with alpha = -2 * smile,
   then up to 5 more steps of 0.05 * alpha while the emotion classifier (deepface's)
   still calls the face happy; a[16] := 0; z re-encoded.
4. Views from that front state, not kept: yaw -30 -> ``right``, yaw +30 -> ``left``
   (FFHQ-UV's names), and ``front`` itself.
Images come from the TF StyleGAN2 config-f weights with FFHQ-UV's RandomState(0) noise.
Flow, generator and classifier run batched over the samples of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from stages.attribute import ATTRIBUTE_VECTOR
from stages.base import Sample, Stage, StageResult, StageSettings, bounded, configured_weights_dir
from stages.condition import ATTRIBUTE_INDEX, VECTOR_SIZE
from stages.errors import ConfigError, SampleError
from stages.inversion import INVERSION_LATENT
from stages.synthesis import GENERATOR_FILE
from stages.views import FRONT, LEFT, RIGHT, VIEW, VIEW_NAMES, VIEW_YAWS, view_key

EDIT_MISSING_INPUT = "edit_missing_input"  # no inversion latent or attribute vector from the earlier stages
EDIT_BAD_INPUT = "edit_bad_input"  # latent or attribute vector of the wrong size, or not finite

FLOW_FILE = "styleflow_model/modellarge10k.pt"
EXPRESSION_FILE = "styleflow_model/expression_direction.pt"

NUM_WS = 18  # W+ rows of config-f 1024; FFHQ-UV's edit layer ranges index them
# FFHQ-UV's targets (run_styleflow_editing.py set_normal): even lighting (SH DC only), then norm_attr.
DELIGHT_SH = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
NORMALISE = (("Glasses", 0.0), ("Yaw", 0.0), ("Pitch", 0.0), ("Baldness", 1.0))
EXPRESSION_SCALE = -2.0  # alpha = 0 - 2 * smile


@dataclass
class EditSettings(StageSettings):
    batch_size: int = 4
    generator_file: str = GENERATOR_FILE  # TF or ADA .pkl, rosinality .pt; relative to models.weights_dir
    flow_file: str = FLOW_FILE
    smile_direction: Optional[str] = None  # (1, 512) tensor file; None = weights_dir/expression_direction.pt
    noise_seed: Optional[int] = 0  # FFHQ-UV's RandomState(0) noise; None keeps the checkpoint's noise
    expression_walk: bool = True  # walk further while the emotion classifier says happy
    expression_extra_steps: int = bounded(5, low=0)  # FFHQ-UV: n_loop < 5
    expression_step: float = bounded(0.05, low=0)  # FFHQ-UV: 0.05 * alpha per extra step
    write_views: bool = True  # the three 1024 views as outputs view_front / view_left / view_right


class EditStage(Stage):
    """Normalise lighting, glasses, pose, hair and expression with StyleFlow, then render three views."""

    name = "edit"
    Settings = EditSettings
    manifest_fields = (
        *(pa.field(f"edit_latent_{view}", pa.list_(pa.float32())) for view in VIEW_NAMES),  # W+ [18, 512] row-major
        *(pa.field(f"edit_attribute_{view}", pa.list_(pa.float32())) for view in VIEW_NAMES),  # 17-dim condition
        pa.field("edit_expression_steps", pa.int16()),  # extra 0.05*alpha steps the walk took (0..5)
        pa.field("edit_expression_happy", pa.bool_()),  # the classifier still says happy on the front view
    )
    inputs = (INVERSION_LATENT, ATTRIBUTE_VECTOR)
    outputs = (VIEW,)

    @classmethod
    def writes(cls, settings: StageSettings) -> tuple[str, ...]:
        assert isinstance(settings, EditSettings)
        return cls.outputs if settings.write_views else ()

    @staticmethod
    def _files(settings: EditSettings, weights_dir: Optional[str]) -> dict[str, str]:
        from stages.face.deepface_models import deepface_home, missing_weights
        from stages.networks import weight_location

        files = {"generator": weight_location(weights_dir, settings.generator_file, "stages.edit.generator_file"),
                 "flow": weight_location(weights_dir, settings.flow_file, "stages.edit.flow_file"),
                 "direction": weight_location(weights_dir, settings.smile_direction or EXPRESSION_FILE,
                                              "stages.edit.smile_direction")}
        if settings.expression_walk:
            missing = missing_weights(deepface_home(weights_dir) if weights_dir else None, ("emotion",))
            if missing:
                raise ConfigError(f"missing weights file {missing[0]} (the emotion classifier of "
                                  "stages.edit.expression_walk); see README section 'Weights'")
        return files

    @classmethod
    def preflight(cls, settings: StageSettings, config: Any) -> None:
        """Generator, flow, smile direction and (with the walk) the emotion weights must exist."""
        assert isinstance(settings, EditSettings)
        cls._files(settings, configured_weights_dir(config))

    def setup(self) -> None:
        """Load the generator (fixed noise), the flow, the smile direction and the emotion classifier."""
        import torch

        from stages.networks import local_weight_file
        from stages.networks.styleflow import FlowEditor, load_styleflow
        from stages.synthesis import ViewSynthesizer

        settings: EditSettings = self.settings
        files = self._files(settings, self.context.weights_dir)
        self.device = torch.device(self.context.device)
        # The edit layer ranges index 18 W+ rows (1024 px).
        self.synthesizer = ViewSynthesizer(files["generator"], self.context.device,
                                           bool(self.context.config.models.fp16), settings.noise_seed, NUM_WS)
        flow = load_styleflow(local_weight_file(files["flow"]))
        w_dim = self.synthesizer.w_dim
        if flow.dim != w_dim or flow.num_attributes != VECTOR_SIZE:
            raise ConfigError(f"{files['flow']}: flow of dim {flow.dim} with {flow.num_attributes} attributes "
                              f"does not fit the generator's w_dim {w_dim} and {VECTOR_SIZE} attributes")
        direction = torch.load(local_weight_file(files["direction"]), map_location="cpu", weights_only=True)
        if not isinstance(direction, torch.Tensor) or direction.numel() != w_dim:
            raise ConfigError(f"{files['direction']}: expected a (1, {w_dim}) smile direction tensor")
        self.editor = FlowEditor(flow.to(self.device))
        # FFHQ-UV repeats the [1, 512] direction over the 18 rows.
        self.direction = direction.float().reshape(1, 1, w_dim).to(self.device)
        self.classifier = None
        if settings.expression_walk:
            from stages.face.deepface_models import DeepfaceModels, deepface_home

            self.classifier = DeepfaceModels(deepface_home(self.context.weights_dir), ("emotion",),
                                             device=str(self.device))

    def process_batch(self, samples: list[Sample]) -> list[StageResult | SampleError]:
        """Edit all valid samples of the batch together."""
        import torch

        results: list[StageResult | SampleError | None] = [None] * len(samples)
        valid: list[int] = []
        latents, attributes = [], []
        for i, sample in enumerate(samples):
            try:
                w, a = self._inputs(sample)
            except SampleError as error:
                results[i] = error
                continue
            valid.append(i)
            latents.append(w)
            attributes.append(a)
        if valid:
            w = torch.from_numpy(np.stack(latents)).to(self.device)
            a = torch.from_numpy(np.stack(attributes)).to(self.device)
            for j, result in enumerate(self._edit([samples[i] for i in valid], w, a)):
                results[valid[j]] = result
        return results  # type: ignore[return-value]

    def _inputs(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """(W+ (18, w_dim) float32, attributes (17,) float32) from the earlier stages' fields."""
        latent, vector = sample.fields.get(INVERSION_LATENT), sample.fields.get(ATTRIBUTE_VECTOR)
        if latent is None or vector is None:
            missing = [n for n, v in ((INVERSION_LATENT, latent), (ATTRIBUTE_VECTOR, vector)) if v is None]
            raise SampleError(EDIT_MISSING_INPUT, f"no {', '.join(missing)} (run the inversion and attribute stages)")
        w = np.asarray(latent, dtype=np.float32).reshape(-1)
        a = np.asarray(vector, dtype=np.float32).reshape(-1)
        w_dim = self.synthesizer.w_dim
        if w.size != NUM_WS * w_dim or a.size != VECTOR_SIZE:
            raise SampleError(EDIT_BAD_INPUT, f"latent of {w.size} values (need {NUM_WS}x{w_dim}) or attribute "
                                              f"vector of {a.size} (need {VECTOR_SIZE})")
        if not (np.isfinite(w).all() and np.isfinite(a).all()):
            raise SampleError(EDIT_BAD_INPUT, "latent or attribute vector is not finite")
        return w.reshape(NUM_WS, w_dim), a

    def _edit(self, samples: list[Sample], w: Any, a: Any) -> list[StageResult]:
        """FFHQ-UV's set_normal on a batch: w (B, 18, w_dim), a (B, 17)."""
        import torch

        from stages.networks.styleflow import replace_rows

        batch = w.shape[0]
        state = self.editor.start(w, a)
        state = self.editor.edit(state, "Light", torch.tensor(DELIGHT_SH).expand(batch, -1))
        for name, value in NORMALISE:
            state = self.editor.edit(state, name, torch.full((batch,), value))

        smile = state.attributes[:, ATTRIBUTE_INDEX["Expression"]]
        alpha = (EXPRESSION_SCALE * smile)[:, None, None]
        walk = state.w + alpha * self.direction
        front_images = self._render(replace_rows(state.w, walk, "Expression"))
        steps = np.zeros(batch, dtype=np.int16)
        happy = self._happy(front_images)
        settings: EditSettings = self.settings
        while self.classifier is not None:
            going = happy & (steps < settings.expression_extra_steps)
            if not going.any():
                break
            index = torch.from_numpy(np.flatnonzero(going)).to(self.device)
            walk[index] = walk[index] + settings.expression_step * alpha[index] * self.direction
            front_images[going] = self._render(replace_rows(state.w[index], walk[index], "Expression"))
            happy[going] = self._happy(front_images[going])
            steps[going] += 1
        attributes = state.attributes.clone()
        attributes[:, ATTRIBUTE_INDEX["Expression"]] = 0.0
        front = self.editor.reencode(replace_rows(state.w, walk, "Expression"), attributes)

        views = {FRONT: (front.w, front.attributes, front_images)}
        for view in (RIGHT, LEFT):
            yaw = VIEW_YAWS[view]
            turned = self.editor.edit(front, "Yaw", torch.full((batch,), yaw), keep=False)
            views[view] = (turned.w, turned.attributes, self._render(turned.w))
        results = []
        for i, sample in enumerate(samples):
            fields: dict[str, Any] = {"edit_expression_steps": int(steps[i]),
                                      "edit_expression_happy": bool(happy[i]) if self.classifier else None}
            for view in VIEW_NAMES:
                latent, condition, images = views[view]
                fields[f"edit_latent_{view}"] = latent[i].float().cpu().numpy().reshape(-1)
                fields[f"edit_attribute_{view}"] = condition[i].float().cpu().numpy()
                if settings.write_views:
                    self.context.write_image(sample, view_key(VIEW, view), images[i])
            results.append(StageResult(fields=fields))
        return results

    def _render(self, w: Any) -> np.ndarray:
        """W+ (B, 18, w_dim) -> (B, R, R, 3) uint8, FFHQ-UV step 3's TF conversion."""
        return self.synthesizer.render(w)

    def _happy(self, images: np.ndarray) -> np.ndarray:
        """(B,) bool: the emotion classifier's top class is "happy" (all False without a classifier).

        The whole aligned image is classified, as FFHQ-UV's classifier does.
        """
        if self.classifier is None:
            return np.zeros(len(images), dtype=bool)
        from stages.face.deepface_models import HAPPY, face_input

        readings = self.classifier.analyze([face_input(image) for image in images])
        return np.array([int(np.argmax(r.emotion)) == HAPPY for r in readings], dtype=bool)
