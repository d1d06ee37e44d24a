"""Export throughput (samples/s, local) per format, and the render stage's seconds per sample at several
batch sizes (CPU by default).

Export: a finished run written in the run layout (``tests/tiny_runs.py``: ``--samples`` samples with
1024x1024 UV maps of noise, which compress like nothing, so files are ~3 MB, about twice a real map, and
released-layout latents), exported to a local folder in each format; one fresh export each.
Render: ``RenderStage`` in-process with the full config-f generator (random weights, written as FFHQ-UV's
TF pickle and read by its loader), three 1024 views per sample; seconds per sample = wall time of one
``process_batch`` / batch size, after a warm-up batch. Prints tables; asserts nothing.

    .venv/bin/python bench/bench_export_render.py [--samples 200] [--batches 1,4,16] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXPORTS = (("ffhq-uv", {}), ("stylegan2-ada", {}), ("stylegan2-ada", {"zip": True}),
           ("stylegan2-ada", {"crop": "cropface630"}), ("webdataset", {}))


def bench_export(samples: int, work: Path) -> None:
    from pipeline.export import ExportOptions, export_run
    from tests.tiny_runs import TinySample, write_run

    started = time.perf_counter()
    run = write_run(str(work / "run"), work / "face-latents", [TinySample(f"{i:05d}", age=20.0 + i % 50)
                                                                 for i in range(samples)],
                    shard_size=100, uv_size=1024, w_dim=512)
    print(f"export: a run of {samples} samples written in {time.perf_counter() - started:.1f}s")
    print(f"{'format':<30} {'seconds':>8} {'samples/s':>10}")
    for index, (fmt, extra) in enumerate(EXPORTS):
        dest = work / f"dest{index}" / ("ffhq-uv.zip" if extra.get("zip") else "")
        options = ExportOptions(fmt, crop=extra.get("crop", "none"))
        started = time.perf_counter()
        summary = export_run(run, str(dest).rstrip("/"), options)
        seconds = time.perf_counter() - started
        label = fmt + (" (zip)" if extra.get("zip") else "") + (" cropface630" if "crop" in extra else "")
        print(f"{label:<30} {seconds:8.2f} {summary.samples / seconds:10.1f}")


def bench_render(batches: list[int], device: str, work: Path) -> None:
    import numpy as np
    import torch

    from pipeline.config import load_config, stage_settings
    from pipeline.storage import open_storage
    from stages.base import Sample, StageContext
    from stages.latents import VIEWS, write_view_latent
    from stages.networks.stylegan2 import Generator, GeneratorConfig
    from stages.render import RenderStage
    from stages.synthesis import GENERATOR_FILE
    from tests.tiny_gan_weights import write_tf_pickle

    torch.manual_seed(0)
    write_tf_pickle(work / "weights" / GENERATOR_FILE, Generator(GeneratorConfig.config_f()).eval())
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(max(batches)):
        folder = work / "latents" / "000" / f"{i:05d}"
        folder.mkdir(parents=True)
        for view in VIEWS:
            data = write_view_latent(rng.standard_normal((18, 512)) * 0.5, np.zeros(17))
            (folder / f"{i:05d}_{view}_latent.pt").write_bytes(data)
        inputs.append((f"{i:05d}", str(folder)))
    config = load_config("from-latents", overrides=(f"output={work / 'out'}", f"models.weights_dir={work / 'weights'}",
                                                    f"models.device={device}"))
    stage = RenderStage(stage_settings(config, "render"), StageContext(open_storage(str(work / "out")), config,
                                                                       "render"))
    stage.setup()
    print(f"render (config-f, 3 views of 1024 per sample, {device}, {torch.get_num_threads()} threads)")
    print(f"{'batch':>5} {'s/sample':>9} {'samples/s':>10}")
    stage.process_batch([Sample(id=inputs[0][0], uri=inputs[0][1], shard=0, index=0)])  # warm-up
    for batch in batches:
        samples = [Sample(id=sid, uri=uri, shard=0, index=i) for i, (sid, uri) in enumerate(inputs[:batch])]
        started = time.perf_counter()
        stage.process_batch(samples)
        if device == "cuda":
            torch.cuda.synchronize()
        per_sample = (time.perf_counter() - started) / batch
        print(f"{batch:>5} {per_sample:9.2f} {1 / per_sample:10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="samples in the exported run")
    parser.add_argument("--batches", default="1,4,16", help="render batch sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip", choices=("export", "render"), help="run only the other benchmark")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-export-render-") as tmp:
        if args.skip != "export":
            bench_export(args.samples, Path(tmp) / "export")
        if args.skip != "render":
            bench_render([int(b) for b in args.batches.split(",")], args.device, Path(tmp) / "render")


if __name__ == "__main__":
    main()
