"""The fit stage: FFHQ-UV's RGB fitting (paper section 4.2, pipeline.md section 7) of each input photo.

One photo -> a textured HiFi3D++ head: FFHQ-UV's preprocessing (``stages/fitting/preprocess.py``), then three
stages. Profiles (``stages.fit.profile``):
- ``open`` (default, ``stages/fitting/photo_fit.py``): nothing but pip packages; shape and pose from the
  project's landmark fit, the UV texels optimised directly with SH lighting and pose on the differentiable CPU
  renderer (``stages/fitting/render.py``);
- ``faithful`` (``stages/fitting/faithful_photo.py``): FFHQ-UV's own networks and 3DMM from
  ``models.weights_dir`` under FFHQ-UV's ``checkpoints/`` names (``stages/fitting/faithful_models.py``): Deep3D
  regression, then the texture GAN's latent and the 3DMM optimised (``stages/fitting/faithful_fit.py``). The
  texture GAN (``stages.fit.texture_gan``) is ``texgan_ffhq_uv.pth`` (whole UV maps) or ``cropface630`` (FFHQ-UV's
  face-crop GAN, its output pasted into the template and blended twice: ``stages/fitting/cropface_texture.py``).
Writes FFHQ-UV's output set per photo (``stages/fitting/outputs.py``); the final UV map is also output ``uv``
(``stage3_uv.png``), which the contact sheet and the report show. ``stages.fit.eyeballs`` (``ffhq-uv fit
--eyeballs DIR``) adds FFHQ-UV's template eyeballs to the final meshes (``stages/mesh_tools/eyeballs.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, get_args

import numpy as np
import pyarrow as pa

from stages.base import PHOTO, Sample, Stage, StageResult, StageSettings, bounded, configured_weights_dir
from stages.errors import ConfigError, SampleError
from stages.face.landmarks import MultiFacePolicy
from stages.unwrap import Rasterizer

FitProfile = Literal["open", "faithful"]
PROFILES: tuple[str, ...] = get_args(FitProfile)
TextureGanChoice = Literal["ffhq_uv", "cropface630"]  # the faithful texture GAN (faithful_models.TEXGAN_FILES)
FIT_FAILED = "fit_failed"  # the landmark fit or the optimisation could not run on this photo
STAGES = (1, 2, 3)
# Final (stage 3) loss terms in the manifest; a term a profile does not have is null. open: colour, smooth,
# symmetry, gamma, landmark; faithful: colour, gamma, landmark, identity, lpips, latent, reg_id, reg_exp.
LOSS_TERMS = ("colour", "smooth", "symmetry", "gamma", "landmark", "identity", "lpips", "latent", "reg_id",
              "reg_exp")
TIMED_PARTS = ("preprocess", "stage1", "stage2", "stage3")

@dataclass
class FitSettings(StageSettings):
    profile: FitProfile = "open"  # open | faithful
    # Faithful profile: texgan_ffhq_uv.pth (whole maps) or FFHQ-UV's cropface630 face-crop GAN with its template paste.
    texture_gan: TextureGanChoice = "ffhq_uv"  # ffhq_uv | cropface630
    # The HiFi3D++ topology is the run-level ``topology`` (its ``obj`` and ``cache_dir``); the fit needs hifi3dpp.
    stage2_steps: int = bounded(100, low=0)  # FFHQ-UV's schedule
    stage3_steps: int = bounded(200, low=0)
    multiple_faces: MultiFacePolicy = "largest"  # largest | reject
    rasterizer: Rasterizer = "auto"  # auto (nvdiffrast on cuda, else cpu) | cpu | nvdiffrast
    # FFHQ-UV's BiSeNet checkpoint (parsing_model/79999_iter.pth) for the parse mask, relative to
    # models.weights_dir or absolute; None = the parse mask comes from the landmarks.
    face_parser: Optional[str] = None
    # Folder of FFHQ-UV's template eyeballs (Mesh_Add_EyeBall/eye_ball_assets: eyeLeft_mesh_move.obj,
    # eyeRight_mesh_move.obj, eye_ball_tex.png); set = eyeballs added to the final id / exp meshes.
    eyeballs: Optional[str] = None


def _manifest_fields() -> tuple[pa.Field, ...]:
    fields = [pa.field("fit_profile", pa.string())]
    fields += [pa.field(f"fit_photometric_l1_stage{k}", pa.float32()) for k in STAGES]  # masked L1 at 224
    fields += [pa.field(f"fit_loss_{term}", pa.float32()) for term in LOSS_TERMS]  # final (stage 3), or null
    fields.append(pa.field("fit_landmark_error_px", pa.float32()))  # final mean landmark error, 224 pixels
    fields += [pa.field(f"fit_{angle}_deg", pa.float32()) for angle in ("pitch", "yaw", "roll")]
    fields += [pa.field(f"fit_seconds_{part}", pa.float32()) for part in TIMED_PARTS]
    return tuple(fields)


class FitStage(Stage):
    """RGB fitting of one photo per sample."""

    name = "fit"
    Settings = FitSettings
    manifest_fields = _manifest_fields()
    inputs = (PHOTO,)
    outputs = ("uv",)  # and FFHQ-UV's fitting output set (stages/fitting/outputs.py)

    @classmethod
    def preflight(cls, settings: FitSettings, config: Any) -> None:
        """The topology's source and (faithful) every checkpoint, without loading anything."""
        from stages.geometry.hifi3dpp import check_sources
        from stages.unwrap import face_parser_location

        if config.topology.name != "hifi3dpp":
            raise ConfigError(f"the fit stage needs topology.name=hifi3dpp, not {config.topology.name}")
        weights_dir = configured_weights_dir(config)
        if settings.profile == "faithful":
            from stages.fitting.faithful_models import check_files

            check_files(weights_dir, settings.texture_gan)
        elif settings.texture_gan != "ffhq_uv":
            raise ConfigError(f"stages.fit.texture_gan={settings.texture_gan} needs the faithful profile "
                              "(--profile faithful); the open profile has no texture GAN")
        if settings.eyeballs:
            _check_eyeballs(settings.eyeballs)
        face_parser_location(settings, config, "stages.fit.face_parser")
        check_sources(config)

    def setup(self) -> None:
        """Load the HiFi3D++ topology, the template texture, the fitter and the landmark detector."""
        from stages.face.detectors import make_detector
        from stages.geometry.hifi3dpp import load_hifi3dpp
        from stages.geometry.rasterize import backend_for_device
        from stages.geometry.uv_topology import DEFAULT_CACHE_DIR

        settings: FitSettings = self.settings
        topology = self.context.config.topology
        self.topology = load_hifi3dpp(topology.obj or None, self.context.weights_dir,
                                      topology.cache_dir or DEFAULT_CACHE_DIR)
        choice = settings.rasterizer
        backend = backend_for_device(self.context.device) if choice == "auto" else choice
        self.fitter = self._fitter(backend)
        self.eyeballs = None
        if settings.eyeballs:
            from stages.geometry.mesh_topology import TopologyError
            from stages.mesh_tools.eyeballs import load_templates

            try:
                self.eyeballs = load_templates(settings.eyeballs)
            except TopologyError as error:
                raise ConfigError(f"stages.fit.eyeballs: {error}") from None
        self.detector = make_detector("mediapipe", 4)
        self.parser = None
        from stages.unwrap import face_parser_location

        parser_location = face_parser_location(settings, self.context.config, "stages.fit.face_parser")
        if parser_location is not None:
            from stages.networks import local_weight_file
            from stages.networks.bisenet import FaceParser, load_bisenet

            parser = load_bisenet(local_weight_file(parser_location), self.context.device)
            self.parser = FaceParser(parser, device=self.context.device)

    def _fitter(self, backend: str):
        """The profile's per-actor fitter: ``FaithfulFitter`` (FFHQ-UV's networks) or the open ``PhotoFitter``."""
        settings: FitSettings = self.settings
        steps = (settings.stage2_steps, settings.stage3_steps)
        from stages.texture.template import template_for

        template, regions = None, None
        if settings.profile == "open" or settings.texture_gan == "cropface630":  # both need the template UV map
            regions = self.topology.masks()
            template = template_for(self.topology.name, regions, self.context.weights_dir)
        if settings.profile == "faithful":
            from stages.fitting.faithful_models import load_faithful_models
            from stages.fitting.faithful_photo import FaithfulFitter

            cropface = None
            if settings.texture_gan == "cropface630":
                from stages.fitting.cropface_texture import cropface_assets

                cropface = cropface_assets(template, regions)
            models = load_faithful_models(self.context.weights_dir, self.context.device, cropface)
            return FaithfulFitter(models, steps, backend)
        from stages.fitting.photo_fit import PhotoFitter

        return PhotoFitter(self.topology, template, steps, backend)

    def process(self, sample: Sample) -> StageResult:
        """Fit the sample's photo and write FFHQ-UV's output set."""
        photo = self.context.read_source_image(sample)
        face = self.detector.detect_one(photo, self.settings.multiple_faces)
        region = None
        if self.parser is not None:
            region = parse_mask(self.parser.parse([photo])[0])
        try:
            result = self.fitter.fit(photo, face.points, region)
        except (RuntimeError, np.linalg.LinAlgError) as error:
            raise SampleError(FIT_FAILED, f"fitting failed: {error}") from None
        self._write(sample, result)
        return StageResult(fields=self._fields(result))

    def _write(self, sample: Sample, result) -> None:
        from stages.fitting.preprocess import save_input_data

        ctx = self.context
        ctx.write_bytes(sample, "fit_input_data", "input_data.pt", save_input_data(result.data))
        for k in STAGES:
            self._write_stage(sample, result.data, k, result.stage_output(k, self.topology))

    def _write_stage(self, sample: Sample, data, k: int, out) -> None:
        """One stage's files: visualisation, UV map + material (stages 2-3), id / exp meshes, coefficients."""
        from stages.fitting import outputs

        ctx = self.context
        vis = outputs.visualisation(data.image, out.render, out.coverage, data.landmarks_down(), out.fitted_lm)
        ctx.write_image(sample, f"fit_stage{k}_vis", vis, f"stage{k}_vis.png")
        if k > 1:
            ctx.write_image(sample, "uv" if k == STAGES[-1] else f"fit_stage{k}_uv", out.texture, f"stage{k}_uv.png")
            ctx.write_bytes(sample, f"fit_stage{k}_mtl", f"stage{k}_mesh.mtl", outputs.mesh_mtl(k).encode())
        for part, vertices in out.meshes.items():
            obj = outputs.mesh_obj(self.topology, vertices, k, out.texture, out.colours)
            ctx.write_bytes(sample, f"fit_stage{k}_mesh_{part}", f"stage{k}_mesh_{part}.obj", obj.encode())
            if self.eyeballs is not None and k == STAGES[-1]:
                self._write_eyeballs(sample, f"stage{k}_mesh_{part}", vertices)
        ctx.write_bytes(sample, f"fit_stage{k}_coeffs", f"stage{k}_coeffs.pt", out.coeffs)

    def _write_eyeballs(self, sample: Sample, mesh_name: str, vertices: np.ndarray) -> None:
        """FFHQ-UV's template eyeballs placed in the head ``mesh_name``: ``<mesh>_{L,R}_ball.obj`` + material."""
        from stages.geometry.mesh_topology import TopologyError
        from stages.geometry.obj import Mesh, format_mtl, format_obj
        from stages.mesh_tools import eyeballs

        head = Mesh(vertices=vertices, faces=self.topology.triangles)
        try:
            fits = eyeballs.place_eyeballs(head, self.eyeballs, source=mesh_name)
        except TopologyError as error:
            raise SampleError(FIT_FAILED, f"eyeballs: {error}") from None
        ctx = self.context
        for side, fit in fits.items():
            name = f"{mesh_name}_{eyeballs.OUTPUT_FILES[side]}"
            ctx.write_bytes(sample, f"fit_{name[:-4]}", name, format_obj(fit.mesh).encode())
        if "fit_eyeball_texture" not in sample.outputs:  # one texture and material for all the balls
            from pathlib import Path

            texture = (Path(self.settings.eyeballs) / eyeballs.TEXTURE_FILE).read_bytes()
            ctx.write_bytes(sample, "fit_eyeball_texture", eyeballs.TEXTURE_FILE, texture)
            ctx.write_bytes(sample, "fit_eyeball_mtl", eyeballs.MATERIAL_FILE,
                            format_mtl({eyeballs.MATERIAL_NAME: eyeballs.TEXTURE_FILE}).encode())

    def _fields(self, result) -> dict[str, Any]:
        final = result.reports[STAGES[-1]]
        fields: dict[str, Any] = {"fit_profile": self.settings.profile,
                                  "fit_landmark_error_px": final.landmark_error_px}
        fields.update({f"fit_photometric_l1_stage{k}": result.reports[k].photometric_l1 for k in STAGES})
        fields.update({f"fit_loss_{term}": final.losses.get(term) for term in LOSS_TERMS})
        fields.update({f"fit_{name}_deg": float(a) for name, a in zip(("pitch", "yaw", "roll"), result.angles_deg())})
        fields.update({f"fit_seconds_{part}": result.seconds[part] for part in TIMED_PARTS})
        return fields


def _check_eyeballs(folder: str) -> None:
    """The eyeball template folder has FFHQ-UV's files, or a one-line ConfigError naming the missing ones."""
    from pathlib import Path

    from stages.mesh_tools.eyeballs import TEMPLATE_FILES, TEXTURE_FILE

    missing = [name for name in (*TEMPLATE_FILES.values(), TEXTURE_FILE) if not (Path(folder) / name).is_file()]
    if missing:
        raise ConfigError(f"stages.fit.eyeballs (--eyeballs): {folder} lacks {', '.join(missing)} (FFHQ-UV's "
                          "Mesh_Add_EyeBall/eye_ball_assets); see README section 'RGB fitting'")


def parse_mask(labels: np.ndarray) -> np.ndarray:
    """FFHQ-UV's fitting parse mask from (H, W) BiSeNet labels: face * (1 - mouth) * (1 - eyes), no erosion."""
    from stages.networks.bisenet import face_parsing_mask

    return face_parsing_mask(labels, exclude_eyes_mouth=True, eye_box=1)
