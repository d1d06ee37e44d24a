"""The complete stage: per-view UV unwraps -> one complete 1024 UV map, its quality metrics and a preview.

FFHQ-UV step 4 after the unwrap (pipeline.md 2.4 (e)-(g)): merge the views left ->
right -> front with YUV colour matching and soft masks, Poisson-fill the eyes,
nostrils and mouth from the template, blend with the template outside the reliable
region and put the template's hair on top (``stages/texture``). Inputs are the unwrap
stage's outputs ``uv_<view>`` (RGB) and ``uvmask_<view>`` (gray) in the topology of
the run (the run-level ``topology``); outputs are ``uv`` (1024x1024 8-bit RGB PNG)
and, when configured, ``preview``: the template head of the topology textured with
the map, rendered from the front and at -45 / +45 degrees of yaw.

Quality metrics go to the manifest (``stages/texture/quality.py`` documents them);
configurable thresholds mark a sample ``filtered`` with the failed check as reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from stages.base import Sample, Stage, StageResult, StageSettings, bounded
from stages.errors import ConfigError, SampleError
from stages.unwrap import LANDMARK_ERROR_VIEW, UV_VIEW, UVMASK_VIEW
from stages.views import VIEW_NAMES, view_key

# Error codes of this stage (README's error table).
NO_UV_VIEWS = "no_uv_views"  # no uv_<view> output from the unwrap stage
UV_SIZE_MISMATCH = "uv_size_mismatch"  # a per-view unwrap does not match the topology's UV size

# File keys this stage writes.
UV = "uv"  # the complete (S, S, 3) RGB UV map
PREVIEW = "preview"  # the template head textured with it, at yaw -45, 0, +45 degrees


@dataclass
class CompleteSettings(StageSettings):
    preview: bool = True  # write the ``preview`` render (front and +-45 degrees)
    preview_size: int = bounded(512, low=16)  # pixels per rendered view
    pyramid_levels: int = bounded(5, low=1, high=10)  # FFHQ-UV's Laplacian-pyramid depth
    # A template UV map (PNG path or fsspec URL) in the run's topology, e.g. from `ffhq-uv template build`;
    # None = FFHQ-UV's topo_assets/template_base_uv.png when present (hifi3dpp), else the procedural template.
    template: Optional[str] = None
    # Quality thresholds; None disables a check. Failing one marks the sample ``filtered``. FFHQ-UV did not
    # publish its filter (pipeline.md 2.5); these defaults are estimates: FFHQ-UV's example sample 01223 gives a
    # valid ratio of 0.93, a BS error of 8.0 (the released set averages 7.3) and landmark errors below 1%.
    # merged valid texture area over the centre face, in [0, 1]
    min_valid_ratio: Optional[float] = bounded(0.5, low=0, high=1)
    max_bs_error: Optional[float] = bounded(20.0, low=0)  # brightness-symmetry error, luma units (0-255)
    # worst view's landmark reprojection error, fraction of face width
    max_landmark_error: Optional[float] = bounded(0.05, low=0)


class CompleteStage(Stage):
    """Merge, correct and complete the per-view unwraps into the final UV map."""

    name = "complete"
    Settings = CompleteSettings
    manifest_fields = (
        pa.field("complete_valid_ratio", pa.float32()),
        *(pa.field(f"complete_valid_ratio_{view}", pa.float32()) for view in VIEW_NAMES),
        pa.field("complete_bs_error", pa.float32()),
        pa.field("complete_landmark_error", pa.float32()),
        pa.field("complete_views", pa.list_(pa.string())),
        pa.field("complete_template", pa.string()),
        # sha256 (16 hex digits) of the template's texels as used: which version of it made the map, so a run resumed
        # after the built template or a template file changed can be told apart with a query
        pa.field("complete_template_digest", pa.string()),
    )

    inputs = (UV_VIEW, UVMASK_VIEW)
    outputs = (UV, PREVIEW)

    @classmethod
    def preflight(cls, settings: StageSettings, config: Any) -> None:
        """The run's topology must have its sources (hifi3dpp: its OBJ or model info); a configured template must
        exist."""
        from stages.geometry.hifi3dpp import check_sources

        check_sources(config)
        assert isinstance(settings, CompleteSettings)
        if settings.template:
            import fsspec

            fs, path = fsspec.core.url_to_fs(settings.template)
            if not fs.exists(path):
                raise ConfigError(f"missing template file {settings.template} (stages.complete.template, a UV map "
                                  "PNG in the run's topology; `ffhq-uv template build` makes one)")

    def setup(self) -> None:
        """Load the topology's masks and boxes, and the template (official file or built)."""
        from stages.geometry.topologies import topology_from_config
        from stages.texture.quality import QualityThresholds, symmetry_axis
        from stages.texture.template import (
            OFFICIAL_TEMPLATE_TOPOLOGY,
            load_official_template,
            load_template_file,
            template_for,
        )

        settings: CompleteSettings = self.settings
        self.topology = topology_from_config(self.context.config)
        self.regions = self.topology.masks()
        self.axis = symmetry_axis(self.regions["eye_l"], self.regions["eye_r"])
        self.boxes = {r.name: (r.top, r.bottom, r.left, r.right) for r in self.topology.fill_regions()}
        if settings.template:
            self.template = load_template_file(settings.template, self.topology.uv_size)
            self.template_source = settings.template
        else:
            official = (self.topology.name == OFFICIAL_TEMPLATE_TOPOLOGY
                        and load_official_template(self.context.weights_dir, self.topology.uv_size) is not None)
            self.template_source = "official" if official else "built"
            self.template = template_for(self.topology.name, self.regions, self.context.weights_dir)
        self.template_digest = template_digest(self.template)
        self.thresholds = QualityThresholds(settings.min_valid_ratio, settings.max_bs_error,
                                            settings.max_landmark_error)

    def process(self, sample: Sample) -> StageResult:
        from stages.texture.merge import complete_texture
        from stages.texture.quality import brightness_symmetry_error, filter_reason, valid_ratio

        settings: CompleteSettings = self.settings
        views = self._read_views(sample)
        result = complete_texture(views, self.template, self.regions, self.boxes, settings.pyramid_levels)
        self.context.write_image(sample, UV, result.uv)
        if settings.preview:
            self.context.write_image(sample, PREVIEW, self.render_preview(result.uv))

        center = self.regions["center_face"]
        landmark_errors = [float(sample.fields[key]) for view in views
                           if sample.fields.get(key := view_key(LANDMARK_ERROR_VIEW, view)) is not None]
        metrics = {
            "valid_ratio": valid_ratio(result.fill_mask, center),
            "bs_error": brightness_symmetry_error(result.uv, center, self.axis),
            "landmark_error": max(landmark_errors) if landmark_errors else None,
        }
        fields: dict[str, Any] = {
            "complete_valid_ratio": metrics["valid_ratio"],
            "complete_bs_error": metrics["bs_error"],
            "complete_landmark_error": metrics["landmark_error"],
            "complete_views": list(views),
            "complete_template": self.template_source,
            "complete_template_digest": self.template_digest,
        }
        for view, uv_view in views.items():
            fields[f"complete_valid_ratio_{view}"] = valid_ratio(uv_view.mask, center)
        return StageResult(fields=fields, filter_reason=filter_reason(metrics, self.thresholds))

    def _read_views(self, sample: Sample) -> dict:
        """The sample's per-view unwraps as ``UVView``s in merge order."""
        from stages.texture.merge import UVView

        size = self.topology.uv_size
        views = {}
        for view in VIEW_NAMES:
            uv_key, mask_key = view_key(UV_VIEW, view), view_key(UVMASK_VIEW, view)
            if uv_key not in sample.outputs or mask_key not in sample.outputs:
                continue
            texture = self.context.read_image(sample.outputs[uv_key].path)
            mask = self.context.read_image(sample.outputs[mask_key].path)[:, :, 0]
            if texture.shape[:2] != (size, size) or mask.shape != (size, size):
                raise SampleError(UV_SIZE_MISMATCH, f"{uv_key} is {texture.shape[1]}x{texture.shape[0]} and its "
                                  f"mask {mask.shape[1]}x{mask.shape[0]}; the topology's UV map is {size}x{size}")
            valid = (mask > 127).astype(np.float32)
            views[view] = UVView(texture.astype(np.float32) * valid[:, :, None], valid)
        if not views:
            raise SampleError(NO_UV_VIEWS, "no per-view UV unwrap (uv_<view> + uvmask_<view>) to complete; "
                              "enable the unwrap stage before complete")
        return views

    def render_preview(self, uv: np.ndarray) -> np.ndarray:
        """The topology's template head textured with ``uv`` (H, W, 3) uint8, at yaw -45, 0, +45 degrees:
        (preview_size, 3 * preview_size, 3) uint8 RGB."""
        from stages.geometry.obj import Mesh
        from stages.geometry.rasterize import backend_for_device
        from stages.geometry.render import TexturedPart, render_views

        topology = self.topology
        mesh = Mesh(vertices=topology.vertices, faces=topology.triangles, uvs=topology.uvs,
                    face_uvs=topology.face_uvs)
        return render_views([TexturedPart(mesh, uv)], size=self.settings.preview_size,
                            backend=backend_for_device(self.context.device))


def template_digest(template: np.ndarray) -> str:
    """The first 16 hex digits of the sha256 of an (H, W, 3) template's float32 texels."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(template, dtype=np.float32).tobytes()).hexdigest()[:16]
