"""The relight stage: bring every view of a face to the target lighting when it is off.

For each current view (``stages.views.current_views``: the edited views, or the aligned
photo as ``front`` in the photo profile) the residual lighting is measured, and the
view is relit to ``target_sh`` (default FFHQ-UV's even light, DC only) when its
DC-relative offset (``stages.lighting.sh.directional_offset``) exceeds ``threshold``
or its skin's left/right brightness asymmetry exceeds ``symmetry_threshold``.
Relit views are written as ``relit_<view>``; later stages pick them up.

Methods:
- ``dpr``: DPR's estimate and relighting (networks.md section 4), at 512 like DPR's demo;
- ``analytic`` (no weights): 2nd-order SH shading fitted on the landmark mesh's
  normals and divided out (``stages.lighting.analytic``); its SH are in L/255 units
  with the skin albedo inside the DC term;
- ``auto`` (the photo profile's): DPR when its weights file is in ``models.weights_dir``,
  analytic otherwise (``stages.attribute.lighting_method``); ``relight_method`` records
  which one ran.

Recorded per view: the residual SH before and after (after = before when untouched),
whether the view was relit, and the skin's left/right brightness asymmetry before and
after (``stages.lighting.face_region.brightness_symmetry``; 0 = symmetric).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from stages.attribute import LightingMethod, dpr_relighter
from stages.base import Sample, Stage, StageResult, StageSettings, bounded, configured_weights_dir
from stages.condition import NUM_LIGHT
from stages.errors import ConfigError, SampleError
from stages.face.landmarks import NO_FACE, MultiFacePolicy
from stages.networks import dpr_weights
from stages.views import ANY_VIEW, RELIT, VIEW_NAMES, current_views, view_key

# FFHQ-UV's delight target (pipeline.md 2.3), DPR's SH order.
EVEN_LIGHT = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]

# Error codes of this stage (README's error table); no_face / multiple_faces come from stages.face.landmarks
# (no_face is tolerated with DPR: only the symmetry score needs the face).
NO_VIEWS = "relight_no_views"


@dataclass
class RelightSettings(StageSettings):
    method: LightingMethod = "dpr"  # dpr (needs dpr_model/trained_model_03.t7) | analytic | auto (dpr if found)
    target_sh: list[float] = field(default_factory=lambda: list(EVEN_LIGHT))  # 9 SH, DPR order
    # Relight when the DC-relative offset from the target exceeds this. StyleFlow-delighted
    # FFHQ-UV views measure 0.2-0.3 with DPR; a side-lit portrait 0.6 and more.
    threshold: float = bounded(0.3, low=0)
    # Relight also when the skin's left/right brightness asymmetry (``relight_symmetry_before_<view>``) exceeds this
    # (None: the SH offset alone decides, as for FFHQ-UV's views, whose turned heads measure up to 0.2). A portrait
    # lit from one side can fit SH close to the target: faces/000055 has offset 0.28 and asymmetry 0.20 (a map with
    # BS error 49; relit 0.10 and 32). The photo profile sets 0.15; the evenly lit shared photos measure 0.02-0.10.
    symmetry_threshold: Optional[float] = bounded(None, low=0)
    multiple_faces: MultiFacePolicy = "largest"  # largest | reject, for the landmarks of each view
    # DPR works at 512: apply only its change of luminance to the full-resolution view (keeps the
    # skin texture of a 1024 view) instead of DPR's demo, which returns its 512 result upsampled.
    keep_detail: bool = True


class RelightStage(Stage):
    """Measure each view's residual lighting; relight the views that are off."""

    name = "relight"
    Settings = RelightSettings
    manifest_fields = (
        pa.field("relight_method", pa.string()),
        pa.field("relight_views", pa.list_(pa.string())),  # views that were relit
        *(pa.field(f"relight_sh_before_{view}", pa.list_(pa.float32())) for view in VIEW_NAMES),
        *(pa.field(f"relight_sh_after_{view}", pa.list_(pa.float32())) for view in VIEW_NAMES),
        *(pa.field(f"relight_offset_before_{view}", pa.float32()) for view in VIEW_NAMES),
        *(pa.field(f"relight_offset_after_{view}", pa.float32()) for view in VIEW_NAMES),
        *(pa.field(f"relight_symmetry_before_{view}", pa.float32()) for view in VIEW_NAMES),
        *(pa.field(f"relight_symmetry_after_{view}", pa.float32()) for view in VIEW_NAMES),
    )

    inputs = (ANY_VIEW,)
    outputs = (RELIT,)

    @classmethod
    def preflight(cls, settings: StageSettings, config: Any) -> None:
        """The target light's shape and, for DPR, its weights file."""
        assert isinstance(settings, RelightSettings)
        if len(settings.target_sh) != NUM_LIGHT or settings.target_sh[0] <= 0:
            raise ConfigError(f"stages.relight.target_sh must hold {NUM_LIGHT} SH values with a positive DC term")
        if settings.method == "dpr":
            dpr_weights(configured_weights_dir(config), "stages.relight.method=dpr")

    def setup(self) -> None:
        """Landmarker (for the face region) and, for DPR, the network."""
        from stages.face.landmarks import FaceLandmarker

        self.landmarker = FaceLandmarker(max_faces=4)
        self.relighter = dpr_relighter(self.settings.method, self.context, "stages.relight.method")

    def process(self, sample: Sample) -> StageResult:
        settings: RelightSettings = self.settings
        views = current_views(sample)
        if not views:
            raise SampleError(NO_VIEWS, "no view to relight (needs the edit stage's views or an aligned photo)")
        fields: dict[str, Any] = {"relight_method": "analytic" if self.relighter is None else "dpr"}  # also auto
        relit_views = []
        for view, path in views.items():
            rgb = self.context.read_image(path)
            try:
                points = self.landmarker.detect_one(rgb, settings.multiple_faces).points
            except SampleError as error:
                if self.relighter is None or error.code != NO_FACE:
                    raise SampleError(error.code, f"view {view}: {error.message}") from None
                points = None  # DPR needs no landmarks; only the symmetry score is then unknown
            record = self._relight_view(rgb, points)
            if record.relit is not None:
                self.context.write_image(sample, view_key(RELIT, view), record.relit)
                relit_views.append(view)
            fields.update({
                f"relight_sh_before_{view}": record.sh_before,
                f"relight_sh_after_{view}": record.sh_after,
                f"relight_offset_before_{view}": record.offset_before,
                f"relight_offset_after_{view}": record.offset_after,
                f"relight_symmetry_before_{view}": record.symmetry_before,
                f"relight_symmetry_after_{view}": record.symmetry_after,
            })
        fields["relight_views"] = relit_views
        return StageResult(fields=fields)

    def _relight_view(self, rgb: np.ndarray, points: np.ndarray | None) -> ViewRecord:
        """Measure one (H, W, 3) uint8 RGB view with its (468, 3) landmarks (None: no face, DPR only);
        relight it if it is off."""
        from stages.lighting.sh import directional_offset

        target = np.asarray(self.settings.target_sh, dtype=np.float64)
        fit = None if points is None else _fit(rgb, points)
        if self.relighter is not None:
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            sh_before = self.relighter.estimate([bgr])[0]
        else:
            sh_before = fit.sh
        offset_before = directional_offset(sh_before, target)
        symmetry_before = _symmetry(fit, points)
        limit = self.settings.symmetry_threshold
        lopsided = limit is not None and symmetry_before > limit  # False when unknown (NaN: no face)
        if offset_before <= self.settings.threshold and not lopsided:
            return ViewRecord(sh_before, sh_before, offset_before, offset_before, symmetry_before, symmetry_before)
        if self.relighter is not None:
            relit_bgr, _ = self.relighter.relight(bgr, target, keep_detail=self.settings.keep_detail)
            relit = np.ascontiguousarray(relit_bgr[:, :, ::-1])
            sh_after = self.relighter.estimate([relit_bgr])[0]
            refit = None if points is None else _fit(relit, points)
        else:
            from stages.lighting.analytic import divide_shading

            relit = divide_shading(rgb, fit, target)
            refit = _fit(relit, points)
            sh_after = refit.sh
        return ViewRecord(sh_before, sh_after, offset_before, directional_offset(sh_after, target),
                          symmetry_before, _symmetry(refit, points), relit)


def _fit(rgb: np.ndarray, points: np.ndarray):
    """The analytic shading fit (also the skin mask and L of the symmetry score) or SampleError."""
    from stages.lighting.analytic import fit_shading_or_fail

    return fit_shading_or_fail(rgb, points)


def _symmetry(fit, points: np.ndarray | None) -> float:
    """Brightness asymmetry of the fitted skin region; NaN without a face."""
    from stages.lighting.face_region import brightness_symmetry

    if fit is None:
        return float("nan")
    return brightness_symmetry(fit.lum, points * fit.scale, fit.region.skin)


@dataclass
class ViewRecord:
    """What the stage measured on one view; ``relit`` is the new (H, W, 3) uint8 RGB image, or None."""

    sh_before: np.ndarray
    sh_after: np.ndarray
    offset_before: float
    offset_after: float
    symmetry_before: float
    symmetry_after: float
    relit: np.ndarray | None = None
