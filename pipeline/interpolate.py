"""``ffhq-uv interpolate``: FFHQ-UV-Interpolate's recipe on a finished run or on released latents.

FFHQ-UV's README_dataset: "filtering -> grouping by gender/age/beard -> latent interpolation within
each group" made 100,000 new maps from FFHQ-UV's samples. FFHQ-UV published neither its thresholds
nor its bins; ours (``InterpolateConfig``, each overridable as ``key=value``) and why:

- filter (run input only; released latents were filtered by FFHQ-UV already):
  ``max_bs_error`` 10.0: the brightness-symmetry error of the map (complete stage); FFHQ-UV's set
  averages 7.29 and its Interpolate set 4.49, so 10 drops the clearly asymmetric maps and keeps the
  typical ones; ``min_valid_ratio`` 0.8: the share of the centre face the views filled (FFHQ-UV's
  example sample 01223 gives 0.93); ``drop_happy``: the emotion classifier still read "happy" after
  the edit stage's expression walk (FFHQ-UV's "expression detection");
- classes: gender (condition index 9 >= 0.5 = male, Face API's binary gender), age bins with edges
  25/35/45/55 years (5 bins, about a decade each, where FFHQ's ages are dense), beard (index 14 >= 0.3:
  Face API scores stubble about 0.1 and a full beard 0.5 and more): 20 classes;
- interpolation: two distinct parents drawn uniformly from one class, ``alpha`` uniform in [0.2, 0.8]
  (away from the parents, so a child is not a near-copy), the same alpha for the three views' W+ and
  conditions, ``child = (1 - alpha) * parent_a + alpha * parent_b``;
- counts: ``count`` split over the classes in proportion to their sizes (largest remainder), classes
  with fewer than two members get none.

Everything random comes from ``numpy.random.default_rng(seed)``: the same input and seed give
byte-identical latent files. Output (NEW): ``inputs/face-latents/<clip>/<id>/<id>_<view>_latent.pt``
(FFHQ-UV's released layout, ids ``000000``...), ``interpolation.parquet`` (id, class, class_index,
parent_a, parent_b, alpha, seed) and ``meta-info.json``; then the ``from-latents`` chain renders them
into NEW (``--run``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pipeline.run_samples import AGE, BEARD, GENDER


@dataclass
class InterpolateConfig:
    seed: int = 0
    max_bs_error: Optional[float] = 10.0  # None disables the check
    min_valid_ratio: Optional[float] = 0.8
    drop_happy: bool = True
    male_threshold: float = 0.5  # condition index 9 (Face API gender: 1 = male)
    age_edges: list[float] = field(default_factory=lambda: [25.0, 35.0, 45.0, 55.0])  # years
    beard_threshold: float = 0.3  # condition index 14 (Face API facialHair.beard, 0-1)
    alpha_min: float = 0.2
    alpha_max: float = 0.8


def age_bin_names(edges: list[float]) -> list[str]:
    bounds = [None, *edges, None]
    return [f"age{'' if lo is None else f'{lo:g}'}-{'' if hi is None else f'{hi:g}'}"
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def class_names(config: InterpolateConfig) -> list[str]:
    """Every class name, in class-index order: ``<gender>_<age bin>_<beard>``."""
    return [f"{gender}_{age}_{beard}" for gender in ("female", "male") for age in age_bin_names(config.age_edges)
            for beard in ("nobeard", "beard")]


def face_class(attribute: Optional[np.ndarray], config: InterpolateConfig) -> Optional[str]:
    """The class of a 17-dim condition vector; None without (finite) gender, age and beard."""
    if attribute is None or not np.isfinite(attribute[[GENDER, AGE, BEARD]]).all():
        return None
    gender = "male" if attribute[GENDER] >= config.male_threshold else "female"
    age = age_bin_names(config.age_edges)[int(np.searchsorted(config.age_edges, attribute[AGE], side="right"))]
    beard = "beard" if attribute[BEARD] >= config.beard_threshold else "nobeard"
    return f"{gender}_{age}_{beard}"
