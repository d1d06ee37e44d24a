"""Finished runs written directly in the run layout (manifest, stats.json markers, files), without Ray.

For the tools that read a finished run (export, interpolate): the samples look like a ``from-latents``
run of FFHQ-UV's released latents (render fields, released latent files as sources, UV maps, the complete
stage's quality columns), with chosen attributes and statuses, so counts and classes are known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.commit import commit_shard
from pipeline.storage import Storage, open_storage
from stages.base import OutputFile, Sample
from stages.imageio import encode_png
from stages.latents import view_file_name, write_view_latent
from stages.views import VIEW_NAMES

YAW = {"front": 0.0, "left": 30.0, "right": -30.0}


@dataclass
class TinySample:
    id: str
    gender: float = 0.0  # condition index 9 (1 = male)
    age: float = 30.0  # index 15
    beard: float = 0.0  # index 14
    status: str = "ok"
    bs_error: float = 5.0
    valid_ratio: float = 0.9
    happy: bool | None = None
    extra: dict = field(default_factory=dict)


def condition(sample: TinySample, view: str) -> np.ndarray:
    a = np.zeros(17, np.float32)
    a[0], a[13] = 1.0, 1.0
    a[9], a[14], a[15], a[11] = sample.gender, sample.beard, sample.age, YAW[view]
    return a


def write_released_latents(folder: Path, sample: TinySample, w_dim: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((18, w_dim)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for view in VIEW_NAMES:
        turned = base.copy()
        turned[:4] += YAW[view] / 30.0
        (folder / view_file_name(sample.id, view)).write_bytes(write_view_latent(turned, condition(sample, view)))


def write_run(root: str, latents_root: Path, samples: list[TinySample], shard_size: int = 3,
              uv_size: int = 64, w_dim: int = 8, storage_options: dict | None = None) -> Storage:
    """A committed run at ``root`` (local path or URL) whose samples are ``samples`` in that order."""
    storage = open_storage(root, storage_options)
    storage.write_bytes(layout.RUN_JSON, json.dumps({"num_shards": -(-len(samples) // shard_size),
                                                     "shard_size": shard_size, "profile": "from-latents"}).encode())
    rng = np.random.default_rng(1)
    by_shard: dict[int, list[Sample]] = {}
    for index, tiny in enumerate(samples):
        folder = latents_root / "000" / tiny.id
        write_released_latents(folder, tiny, w_dim, seed=index)
        sample = Sample(id=tiny.id, uri=str(folder), shard=index // shard_size, index=index, status=tiny.status)
        uv = rng.integers(0, 255, (uv_size, uv_size, 3), dtype=np.uint8)
        data = encode_png(uv)
        path = f"{layout.sample_dir(sample.shard, sample.id)}/uv.png"
        storage.write_bytes(path, data)
        sample.outputs["uv"] = OutputFile.for_data(path, data)
        sample.fields.update({"render_layout": "released", "complete_bs_error": tiny.bs_error,
                              "complete_valid_ratio": tiny.valid_ratio, "edit_expression_happy": tiny.happy,
                              **{f"render_attribute_{v}": condition(tiny, v) for v in VIEW_NAMES}, **tiny.extra})
        if tiny.status == "filtered":
            sample.filter_reason = "bs_error"
        by_shard.setdefault(sample.shard, []).append(sample)
    for shard, members in by_shard.items():
        commit_shard(storage, shard, members, revision=0, fingerprint="tiny")
    return storage
