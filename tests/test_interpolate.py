"""``ffhq-uv interpolate``: FFHQ-UV-Interpolate's filter -> class -> interpolate recipe on a tiny finished run
and on released latents: counts per class, no class mixing, parents and alpha recorded, byte-identical
determinism, and children the from-latents chain reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.export import ExportOptions, export_run
from pipeline.inputs import list_inputs, make_plan
from pipeline.interpolate import (
    LATENTS_DIR,
    TABLE,
    InterpolateConfig,
    class_names,
    class_quotas,
    face_class,
    interpolate,
)
from pipeline.storage import open_storage
from stages.latents import read_view_latent
from stages.views import VIEW_NAMES
from tests.conftest import run_cli
from tests.tiny_runs import TinySample, condition, write_run

FEMALE_YOUNG = "female_age25-35_nobeard"
MALE_BEARD = "male_age35-45_beard"
SAMPLES = [
    *(TinySample(f"f{i}", age=26.0 + i) for i in range(4)),  # 4 x FEMALE_YOUNG
    *(TinySample(f"m{i}", gender=1.0, age=36.0 + i, beard=0.5) for i in range(3)),  # 3 x MALE_BEARD
    TinySample("old", gender=1.0, age=70.0),  # alone in its class: never a parent
    TinySample("asym", age=27.0, bs_error=12.0),  # filtered out: BS error above 10
    TinySample("hole", age=28.0, valid_ratio=0.5),  # filtered out: valid area below 0.8
    TinySample("smile", age=29.0, happy=True),  # filtered out: still happy after the expression walk
    TinySample("gone", age=30.0, status="filtered"),  # not ok in the run
]
PARENTS = {s.id: face_class(condition(s, "front"), InterpolateConfig()) for s in SAMPLES}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("interp")
    return write_run(str(root / "run"), root / "face-latents", SAMPLES, shard_size=4), root


def _children(output: Path) -> list[dict]:
    return pq.read_table(output / TABLE).to_pylist()


def _latent_bytes(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted((output / LATENTS_DIR).rglob("*.pt"))}


def test_counts_per_class_filters_and_no_class_mixing(run):
    storage, root = run
    summary = interpolate(storage.root_url, str(root / "new"), 10, InterpolateConfig(seed=1))
    assert summary.candidates == 8 and summary.dropped == {"bs_error": 1, "valid_ratio": 1, "expression": 1}
    assert summary.per_class == {FEMALE_YOUNG: 6, MALE_BEARD: 4}  # 10 * 4/7 and 10 * 3/7, largest remainder
    children = _children(root / "new")
    assert [c["id"] for c in children] == [f"{i:06d}" for i in range(10)]
    for child in children:
        assert child["parent_a"] != child["parent_b"]
        assert PARENTS[child["parent_a"]] == PARENTS[child["parent_b"]] == child["class"]
        assert class_names(InterpolateConfig())[child["class_index"]] == child["class"]
        assert 0.2 <= child["alpha"] <= 0.8 and child["seed"] == 1
        assert child["parent_a"] not in ("old", "asym", "hole", "smile", "gone")
    meta = json.loads((root / "new" / "inputs" / "meta-info.json").read_text())
    assert meta["000000"]["class"] == children[0]["class"] and meta["000000"]["parents"] == \
        [children[0]["parent_a"], children[0]["parent_b"]]


def _latent(folder: Path, sample_id: str, view: str):
    path = folder / f"{sample_id}_{view}_latent.pt"
    return read_view_latent(path.read_bytes(), str(path))


def test_children_interpolate_their_parents_views(run):
    storage, root = run
    interpolate(storage.root_url, str(root / "mix"), 4, InterpolateConfig(seed=2))
    for child in _children(root / "mix"):
        for view in VIEW_NAMES:
            a, b = (_latent(root / "face-latents" / "000" / p, p, view) for p in (child["parent_a"], child["parent_b"]))
            made = _latent(root / "mix" / LATENTS_DIR / "000" / child["id"], child["id"], view)
            alpha = child["alpha"]
            np.testing.assert_allclose(made.latent, (1 - alpha) * a.latent + alpha * b.latent, atol=1e-6)
            np.testing.assert_allclose(made.attribute, (1 - alpha) * a.attribute + alpha * b.attribute, atol=1e-5)
            assert made.attribute[11] == a.attribute[11]  # both parents' view has the same yaw


def test_same_seed_gives_byte_identical_latents(run):
    storage, root = run
    for name in ("s1", "s2"):
        interpolate(storage.root_url, str(root / name), 7, InterpolateConfig(seed=5))
    assert _latent_bytes(root / "s1") == _latent_bytes(root / "s2")
    assert (root / "s1" / TABLE).read_bytes() == (root / "s2" / TABLE).read_bytes()
    interpolate(storage.root_url, str(root / "s3"), 7, InterpolateConfig(seed=6))
    assert _children(root / "s3") != _children(root / "s1")


def test_largest_remainder_quotas():
    assert class_quotas({"a": 4, "b": 3, "c": 1}, 10) == {"a": 6, "b": 4}
    assert sum(class_quotas({"a": 5, "b": 5, "c": 5}, 100).values()) == 100


def test_released_latents_with_meta_info_and_the_from_latents_chain_reads_the_children(run, tmp_path):
    """Released face-latents (our ffhq-uv export of the run) + meta-info.json, through the CLI; the
    children list and plan as a from-latents input."""
    storage, _ = run
    released = tmp_path / "release"
    export_run(storage, str(released), ExportOptions("ffhq-uv"))
    result = run_cli(["interpolate", str(released / "face-latents"), "seed=3", "max_bs_error=null", "--meta-info",
                      str(released / "meta-info.json"), "--output", str(tmp_path / "new"), "--count", "5"])
    assert "5 new samples from 11 parents" in result.stdout  # every ok sample: released ones are not re-filtered
    assert f"--profile from-latents --input {tmp_path / 'new' / LATENTS_DIR}" in result.stdout
    pairs = list_inputs(str(tmp_path / "new" / LATENTS_DIR), "latents", [], open_storage(str(tmp_path / "x")))
    assert pairs["id"].to_pylist() == [f"{i:06d}" for i in range(5)]
    assert make_plan(pairs, shard_size=1000).num_samples == 5
    bad = run_cli(["interpolate", str(released / "face-latents"), "max_bs_eror=1", "--output", str(tmp_path / "n2"),
                   "--count", "5"], check=False)
    assert bad.returncode == 2 and "max_bs_eror" in bad.stderr


def test_an_edit_run_interpolates_its_manifest_latents(tmp_path):
    """A run of the ffhq-uv profile keeps its views' latents in the edit stage's columns."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        tiny = TinySample(f"e{i}", age=30.0)
        tiny.extra = {"render_layout": None, **{f"edit_latent_{v}": rng.standard_normal(18 * 8).astype(np.float32)
                                                for v in VIEW_NAMES},
                      **{f"edit_attribute_{v}": condition(tiny, v) for v in VIEW_NAMES}}
        samples.append(tiny)
    storage = write_run(str(tmp_path / "run"), tmp_path / "unused", samples)
    interpolate(storage.root_url, str(tmp_path / "new"), 2, InterpolateConfig())
    for child in _children(tmp_path / "new"):
        made = _latent(tmp_path / "new" / LATENTS_DIR / "000" / child["id"], child["id"], "left")
        a, b = (next(s for s in samples if s.id == p).extra["edit_latent_left"].reshape(18, 8)
                for p in (child["parent_a"], child["parent_b"]))
        np.testing.assert_allclose(made.latent, (1 - child["alpha"]) * a + child["alpha"] * b, atol=1e-6)


def test_run_renders_the_children_with_the_from_latents_profile(run, tmp_path):
    """``--run``: the new latents go through the from-latents chain into the new run folder (render only here,
    with a tiny generator of the latents' width; the whole chain is tested in test_from_latents.py)."""
    from pipeline.manifest import read_manifest
    from tests import tiny_gan_weights as tiny

    storage, _ = run
    tiny.write_tf_pickle(tmp_path / "w" / tiny.TF_PICKLE_FILE, tiny.tiny_generator(seed=1, w_dim=8))
    result = run_cli(["interpolate", storage.root_url, "seed=4", "run.stages.enabled=[render]",
                      f"run.models.weights_dir={tmp_path / 'w'}", "run.models.device=cpu",
                      "run.stages.render.num_gpus=0", "run.ray.num_cpus=2", "--output", str(tmp_path / "new"),
                      "--count", "3", "--run"])
    assert "rendered: {'ok': 3}" in result.stdout, result.stdout
    rows = read_manifest(str(tmp_path / "new")).to_pylist()
    assert sorted(r["id"] for r in rows) == ["000000", "000001", "000002"]
    assert all({f"view_{v}" for v in VIEW_NAMES} <= set(dict(r["outputs"])) for r in rows)
