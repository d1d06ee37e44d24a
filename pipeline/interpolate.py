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

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa

from pipeline.run_samples import AGE, BEARD, GENDER, attribute_meta, iter_run_samples
from pipeline.storage import Storage
from stages.latents import clip_name, read_view_latent, view_file_name, write_view_latent
from stages.views import VIEW_NAMES

LATENTS_DIR = "inputs/face-latents"  # the children's latents inside the new run folder
TABLE = "interpolation.parquet"
META_INFO = "inputs/meta-info.json"


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


# -- candidates: the samples children are made from -------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """A sample that may be a parent: its id, class and the folder holding its three view latents."""

    id: str
    face_class: str
    latent_folder: str  # URI of ``<id>_<view>_latent.pt`` files (released layout, or a local cache)


def candidates_from_run(storage: Storage, config: InterpolateConfig, cache_dir: str) -> tuple[list[Candidate],
                                                                                                Counter]:
    """The run's ok samples that pass the filters, with their latents' folder; and why others were dropped.

    A ``from-latents`` run's latents are its source files; an edit run's are written from its manifest
    columns into ``cache_dir`` once, so the manifest is read a single time, shard by shard.
    """
    chosen, dropped = [], Counter()
    for sample in iter_run_samples(storage):
        reason = _filter_reason(sample.quality, config)
        name = face_class(sample.attribute, config)
        if reason is None and name is None:
            reason = "no_attributes"
        if reason is None and sample.row.get("render_layout") != "released":
            files = sample.latent_files(storage)
            if not files:
                reason = "no_latents"
            for view, data in files.items():
                path = os.path.join(cache_dir, sample.id, view_file_name(sample.id, view))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as handle:
                    handle.write(data)
        if reason:
            dropped[reason] += 1
            continue
        folder = sample.source_uri if sample.row.get("render_layout") == "released" else \
            os.path.join(cache_dir, sample.id)
        chosen.append(Candidate(sample.id, name, folder))
    return chosen, dropped


def _filter_reason(quality: dict, config: InterpolateConfig) -> Optional[str]:
    """FFHQ-UV-Interpolate's filter on the run's quality columns; None = keep."""
    bs_error, valid = quality.get("complete_bs_error"), quality.get("complete_valid_ratio")
    if config.max_bs_error is not None and (bs_error is None or not bs_error <= config.max_bs_error):
        return "bs_error"
    if config.min_valid_ratio is not None and (valid is None or not valid >= config.min_valid_ratio):
        return "valid_ratio"
    if config.drop_happy and quality.get("edit_expression_happy"):
        return "expression"
    return None


def candidates_from_latents(source: str, meta_info: Optional[str], config: InterpolateConfig,
                            storage_options: dict) -> list[Candidate]:
    """Released latents: every sample of ``face-latents/`` (FFHQ-UV filtered them), classed by
    ``meta-info.json`` (gender/age/beard) when given, else by its front latent's condition vector."""
    from pipeline.inputs import list_inputs
    from pipeline.storage import open_storage

    reader = open_storage(source, storage_options)
    pairs = list_inputs(source, "latents", [], reader, storage_options).sort_by("id").to_pylist()
    meta = json.loads(reader.read_source(meta_info)) if meta_info else {}
    chosen = []
    for pair in pairs:
        if pair["uri"].endswith(".pt"):
            continue  # a flat e4e inversion has no views to interpolate
        if pair["id"] in meta:
            attribute = _attribute_from_meta(meta[pair["id"]])
        else:
            front = f"{pair['uri']}/{view_file_name(pair['id'], 'front')}"
            attribute = read_view_latent(reader.read_source(front), front).attribute
        name = face_class(attribute, config)
        if name is not None:
            chosen.append(Candidate(pair["id"], name, pair["uri"]))
    return chosen


def _attribute_from_meta(entry: dict) -> np.ndarray:
    """A condition vector holding only gender, age and beard, from a meta-info entry (ours or numeric)."""
    vector = np.full(17, np.nan, np.float32)
    gender = entry.get("gender")
    vector[GENDER] = {"male": 1.0, "female": 0.0}.get(gender, np.nan) if isinstance(gender, str) else \
        (np.nan if gender is None else float(gender))
    for index, key in ((AGE, "age"), (BEARD, "beard")):
        vector[index] = np.nan if entry.get(key) is None else float(entry[key])
    return vector


# -- planning and writing the children ------------------------------------------------------------

@dataclass(frozen=True)
class Child:
    id: str
    face_class: str
    class_index: int
    parent_a: str
    parent_b: str
    alpha: float


def class_quotas(sizes: dict[str, int], count: int) -> dict[str, int]:
    """``count`` split over the classes with at least two members, in proportion to size (largest remainder)."""
    eligible = {name: size for name, size in sizes.items() if size >= 2}
    total = sum(eligible.values())
    if total == 0:
        return {}
    exact = {name: count * size / total for name, size in eligible.items()}
    quotas = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(eligible, key=lambda name: (-(exact[name] - quotas[name]), name))
    for name in by_remainder[:count - sum(quotas.values())]:
        quotas[name] += 1
    return quotas


def plan_children(candidates: list[Candidate], count: int, config: InterpolateConfig) -> list[Child]:
    """Deterministic children: classes in class-index order, parents and alpha from ``default_rng(seed)``."""
    names = class_names(config)
    members: dict[str, list[str]] = {}
    for candidate in sorted(candidates, key=lambda c: c.id):
        members.setdefault(candidate.face_class, []).append(candidate.id)
    quotas = class_quotas({name: len(ids) for name, ids in members.items()}, count)
    rng = np.random.default_rng(config.seed)
    children = []
    for name in names:
        ids = members.get(name, [])
        for _ in range(quotas.get(name, 0)):
            a, b = rng.choice(len(ids), size=2, replace=False)
            alpha = float(rng.uniform(config.alpha_min, config.alpha_max))
            children.append(Child(f"{len(children):06d}", name, names.index(name), ids[a], ids[b], alpha))
    return children


def write_children(children: list[Child], candidates: list[Candidate], out: Storage) -> int:
    """Each child's three view latents, ``(1 - alpha) * a + alpha * b``, in the released layout under
    ``inputs/face-latents``; files already there with their size are kept (a resumed command). Returns files
    written."""
    folders = {c.id: c.latent_folder for c in candidates}
    written = 0
    for index, child in enumerate(children):
        prefix = f"{LATENTS_DIR}/{clip_name(index)}/{child.id}"
        sizes = out.file_sizes(prefix)
        parents = [_views(out, folders[pid], pid) for pid in (child.parent_a, child.parent_b)]
        for view in VIEW_NAMES:
            (wa, aa), (wb, ab) = parents[0][view], parents[1][view]
            w = (1.0 - child.alpha) * wa + child.alpha * wb
            a = None if aa is None or ab is None else (1.0 - child.alpha) * aa + child.alpha * ab
            data = write_view_latent(w.astype(np.float32), None if a is None else a.astype(np.float32))
            path = f"{prefix}/{view_file_name(child.id, view)}"
            if sizes.get(path) != len(data):
                out.write_bytes(path, data)
                written += 1
    return written


def _views(storage: Storage, folder: str, sample_id: str) -> dict[str, tuple[np.ndarray, Optional[np.ndarray]]]:
    views = {}
    for view in VIEW_NAMES:
        uri = f"{folder.rstrip('/')}/{view_file_name(sample_id, view)}"
        latent = read_view_latent(storage.read_source(uri), uri)
        views[view] = (latent.latent.astype(np.float64), None if latent.attribute is None else
                       latent.attribute.astype(np.float64))
    return views


def children_table(children: list[Child], seed: int) -> pa.Table:
    return pa.table({
        "id": pa.array([c.id for c in children], pa.string()),
        "class": pa.array([c.face_class for c in children], pa.string()),
        "class_index": pa.array([c.class_index for c in children], pa.int32()),
        "parent_a": pa.array([c.parent_a for c in children], pa.string()),
        "parent_b": pa.array([c.parent_b for c in children], pa.string()),
        "alpha": pa.array([c.alpha for c in children], pa.float64()),
        "seed": pa.array([seed] * len(children), pa.int64()),
    })


# -- the command -----------------------------------------------------------------------------------

@dataclass
class InterpolationSummary:
    output: str
    candidates: int
    dropped: dict[str, int]
    per_class: dict[str, int]
    files_written: int

    def render(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        lines = [f"{sum(self.per_class.values())} new samples from {self.candidates} parents (dropped: {dropped}); "
                 f"{self.files_written} latent files written under {self.output}/{LATENTS_DIR}"]
        lines += [f"  {count:>7}  {name}" for name, count in self.per_class.items()]
        return "\n".join(lines)


def interpolate(source: str, output: str, count: int, config: InterpolateConfig, meta_info: Optional[str] = None,
                storage_options: Optional[dict] = None) -> InterpolationSummary:
    """Make ``count`` children of ``source`` (a run, or released face-latents) into the run folder ``output``."""
    from pipeline import layout
    from pipeline.storage import open_storage
    from stages.errors import ConfigError

    if count < 1 or not 0.0 <= config.alpha_min <= config.alpha_max <= 1.0:
        raise ConfigError("--count must be >= 1 and 0 <= alpha_min <= alpha_max <= 1")
    options = storage_options or {}
    origin = open_storage(source, options)
    out = open_storage(output, options)
    out.check_writable()
    with tempfile.TemporaryDirectory(prefix="ffhq-uv-interpolate-") as cache:
        if origin.exists(layout.RUN_JSON):
            candidates, dropped = candidates_from_run(origin, config, cache)
        else:
            candidates, dropped = candidates_from_latents(source, meta_info, config, options), Counter()
        children = plan_children(candidates, count, config)
        if not children:
            raise ConfigError(f"{source}: no class has two samples that pass the filters ({len(candidates)} do)")
        written = write_children(children, candidates, out)
    out.write_bytes(TABLE, _parquet_bytes(children_table(children, config.seed)))
    out.write_bytes(META_INFO, json.dumps(_children_meta(children, out), indent=1).encode())
    return InterpolationSummary(out.root_url, len(candidates), dict(dropped),
                                dict(Counter(c.face_class for c in children)), written)


def _children_meta(children: list[Child], out: Storage) -> dict:
    """meta-info entries of the children (gender, age, beard from their interpolated front condition)."""
    meta = {}
    for index, child in enumerate(children):
        front = f"{LATENTS_DIR}/{clip_name(index)}/{child.id}/{view_file_name(child.id, 'front')}"
        attribute = read_view_latent(out.read_bytes(front), front).attribute
        meta[child.id] = {"ffhq_index": None, **attribute_meta(attribute), "class": child.face_class,
                          "parents": [child.parent_a, child.parent_b], "alpha": child.alpha}
    return meta


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def run_interpolate_command(args, storage_options: dict) -> int:
    """``ffhq-uv interpolate SOURCE --output NEW --count N [key=value ...] [--run]``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from stages.errors import ConfigError

    settings = [o for o in args.overrides if not o.startswith("run.")]
    run_overrides = [o[len("run."):] for o in args.overrides if o.startswith("run.")]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(InterpolateConfig), OmegaConf.from_dotlist(settings))
    except OmegaConfBaseException as error:
        raise ConfigError(f"interpolate setting: {str(error).splitlines()[0]}") from None
    config = InterpolateConfig(**OmegaConf.to_container(merged))
    summary = interpolate(args.source, args.output, args.count, config, args.meta_info, storage_options)
    print(summary.render())
    latents = f"{summary.output}/{LATENTS_DIR}"
    if not args.run:
        print(f"render them: ffhq-uv run --profile from-latents --input {latents} --output {summary.output}")
        return 0
    from pipeline import driver
    from pipeline.config import load_config, registry_for

    endpoint = [f"storage.endpoint_url={args.endpoint_url}"] if args.endpoint_url else []
    run_config = load_config("from-latents", overrides=(f"input.source={latents}", f"output={summary.output}",
                                                         *endpoint, *run_overrides))
    run_summary = driver.run(run_config, registry_for(run_config), progress=False)
    print(f"rendered: {run_summary.status_counts}")
    return 0
