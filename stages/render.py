"""The render stage: FFHQ-UV's views synthesised from its released face latents.

FFHQ-UV's ``gen_face_from_latent.py`` (``run_gen_face_from_latent.sh``) turns each
``<id>_<view>_latent.pt`` back into its 1024 view: the TF StyleGAN2 config-f generator
with the noise fixed by ``RandomState(0)`` and ``noise_mode`` const, no truncation, the TF
uint8 conversion (``stages.synthesis``, the same code as the edit stage). This stage does
that batched, writing ``view_front`` / ``view_left`` / ``view_right``, which relight,
unwrap and complete then use as they use the edit stage's views (profile ``from-latents``).

A sample's source (``input.format=latents``, ``pipeline/inputs.py``) is either the folder
holding its three view files (released ``face-latents/<clip>/<id>/`` or FFHQ-UV's project
``edit/<id>/``), or one flat ``dataset_project`` file ``latents/<id>.pt``: FFHQ-UV's e4e
inversion W+. A flat latent is recorded as ``inversion_latent`` with its image ``inversion``
(G(w)), so the attribute (``input: inversion``) and edit stages can follow, as after the
inversion stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from stages.base import Sample, Stage, StageResult, StageSettings, configured_weights_dir
from stages.errors import ConfigError, SampleError
from stages.inversion import INVERSION, INVERSION_LATENT
from stages.latents import LATENTS, ViewLatent, check_shape, read_view_latent, view_file_name
from stages.synthesis import GENERATOR_FILE
from stages.views import VIEW, VIEW_NAMES, view_key

RENDER_MISSING_LATENT = "render_missing_latent"  # a view's latent file is not in the sample's folder

RELEASED, FLAT = "released", "flat"  # the two source layouts (module docstring)


@dataclass
class RenderSettings(StageSettings):
    batch_size: int = 4  # samples per synthesis call (each view of the batch is one generator batch)
    generator_file: str = GENERATOR_FILE  # TF or ADA .pkl, rosinality .pt; relative to models.weights_dir
    noise_seed: Optional[int] = 0  # FFHQ-UV's RandomState(0) noise; None keeps the checkpoint's noise
    views: list[str] = field(default_factory=lambda: list(VIEW_NAMES))  # views to render from a sample's folder


class RenderStage(Stage):
    """Synthesise each sample's views (or its inversion) from FFHQ-UV latent files."""

    name = "render"
    Settings = RenderSettings
    manifest_fields = (
        pa.field("render_layout", pa.string()),  # released (per-view files) | flat (one e4e inversion W+)
        *(pa.field(f"render_attribute_{view}", pa.list_(pa.float32())) for view in VIEW_NAMES),  # 17-dim condition
    )
    inputs = (LATENTS,)
    # Released per-view latents give the views; a flat e4e file gives the inversion and its latent.
    outputs = (VIEW, INVERSION, INVERSION_LATENT)

    @classmethod
    def preflight(cls, settings: StageSettings, config: Any) -> None:
        """Views must be FFHQ-UV's; the generator file must exist."""
        from stages.networks import weight_location

        assert isinstance(settings, RenderSettings)
        unknown = [view for view in settings.views if view not in VIEW_NAMES]
        if unknown or not settings.views:
            raise ConfigError(f"stages.render.views must be a non-empty subset of {list(VIEW_NAMES)}, "
                              f"not {settings.views}")
        weight_location(configured_weights_dir(config), settings.generator_file, "stages.render.generator_file")

    def setup(self) -> None:
        from stages.networks import weight_location
        from stages.synthesis import ViewSynthesizer

        location = weight_location(self.context.weights_dir, self.settings.generator_file,
                                   "stages.render.generator_file")
        self.synthesizer = ViewSynthesizer(location, self.context.device, bool(self.context.config.models.fp16),
                                           self.settings.noise_seed)

    def process_batch(self, samples: list[Sample]) -> list[StageResult | SampleError]:
        """Read every sample's latents, then one generator batch per view over the batch's samples."""
        results: list[StageResult | SampleError | None] = [None] * len(samples)
        latents: dict[int, dict[str, ViewLatent]] = {}
        for i, sample in enumerate(samples):
            try:
                latents[i] = self._read(sample)
            except SampleError as error:
                results[i] = error
        names = sorted({name for views in latents.values() for name in views})
        for name in names:
            members = [i for i, views in latents.items() if name in views]
            images = self.synthesizer.render(np.stack([latents[i][name].latent for i in members]))
            for i, image in zip(members, images):
                output = INVERSION if name == INVERSION else view_key(VIEW, name)
                self.context.write_image(samples[i], output, image)
        for i, views in latents.items():
            results[i] = StageResult(fields=self._fields(views))
        return results  # type: ignore[return-value]

    def _read(self, sample: Sample) -> dict[str, ViewLatent]:
        """View name -> its latent (``inversion`` for a flat file), shapes checked against the generator."""
        synth = self.synthesizer
        if sample.uri.endswith(".pt"):
            views = {INVERSION: read_view_latent(self.context.storage.read_source(sample.uri), sample.uri)}
        else:
            views = {}
            for view in self.settings.views:
                uri = f"{sample.uri.rstrip('/')}/{view_file_name(sample.id, view)}"
                try:
                    data = self.context.storage.read_source(uri)
                except FileNotFoundError:
                    raise SampleError(RENDER_MISSING_LATENT, f"no {view} latent {uri}") from None
                views[view] = read_view_latent(data, uri)
        for name, view in views.items():
            check_shape(view, synth.num_ws, synth.w_dim, f"{sample.uri} ({name})")
        return views

    @staticmethod
    def _fields(views: dict[str, ViewLatent]) -> dict[str, Any]:
        if INVERSION in views:
            return {"render_layout": FLAT, INVERSION_LATENT: views[INVERSION].latent.reshape(-1)}
        fields: dict[str, Any] = {"render_layout": RELEASED}
        for name, view in views.items():
            fields[f"render_attribute_{name}"] = view.attribute
        return fields
