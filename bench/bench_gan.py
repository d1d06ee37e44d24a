"""Throughput of the GAN stages' networks at full size (random weights): samples/s per batch size.

inversion = e4e IR-SE-50 on 256x256 faces + StyleGAN2 config-f decode at 1024;
edit = FFHQ-UV's StyleFlow sequence (start, delight, 4 kept edits, re-encode, 2 views:
14 dopri5 solves) + 3 renders at 1024 (the expression walk's extra renders and the
emotion classifier are not included). Prints samples/s and the speed-up over batch 1.

    .venv/bin/python bench/bench_gan.py             # batches 1 and 4 (a few minutes on 2 CPU cores)
    .venv/bin/python bench/bench_gan.py --batches 1,4,16 --device cuda --fp16
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stages.networks.e4e import Encoder4Editing, EncoderConfig  # noqa: E402
from stages.networks.styleflow import FlowEditor, StyleFlow  # noqa: E402
from stages.networks.stylegan2 import Generator, GeneratorConfig, ffhq_uv_noise  # noqa: E402


def build(device: str) -> tuple[Encoder4Editing, Generator, StyleFlow]:
    """Full-size networks with seeded random weights."""
    torch.manual_seed(0)
    encoder = Encoder4Editing(EncoderConfig.ir_se50()).eval().requires_grad_(False)
    generator = Generator(GeneratorConfig.config_f()).eval().requires_grad_(False)
    generator.set_noise(ffhq_uv_noise(1024))
    flow = StyleFlow().eval().requires_grad_(False)
    return encoder.to(device), generator.to(device), flow.to(device)


def inversion_step(encoder: Encoder4Editing, generator: Generator, batch: int, device: str) -> None:
    faces = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    codes = encoder(faces)
    generator.synthesis(codes)


def edit_step(editor: FlowEditor, generator: Generator, batch: int, device: str) -> None:
    w = torch.randn(batch, 18, 512, device=device) * 0.5
    attributes = torch.zeros(batch, 17, device=device)
    attributes[:, 0] = 0.9
    attributes[:, 15] = 30.0
    state = editor.start(w, attributes)
    state = editor.edit(state, "Light", torch.tensor([1.0] + [0.0] * 8).expand(batch, -1))
    for name, value in (("Glasses", 0.0), ("Yaw", 0.0), ("Pitch", 0.0), ("Baldness", 1.0)):
        state = editor.edit(state, name, torch.full((batch,), value))
    front = editor.reencode(state.w, state.attributes)
    views = [front.w] + [editor.edit(front, "Yaw", torch.full((batch,), yaw), keep=False).w for yaw in (-30.0, 30.0)]
    for view in views:
        generator.synthesis(view)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fp16", action="store_true", help="autocast to float16 (CUDA only)")
    parser.add_argument("--stages", default="inversion,edit")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    encoder, generator, flow = build(args.device)
    editor = FlowEditor(flow)
    steps = {"inversion": lambda b: inversion_step(encoder, generator, b, args.device),
             "edit": lambda b: edit_step(editor, generator, b, args.device)}
    autocast = torch.autocast("cuda", dtype=torch.float16) if args.fp16 and args.device == "cuda" \
        else contextlib.nullcontext()
    print(f"device={args.device} fp16={args.fp16} threads={torch.get_num_threads()} "
          f"params: e4e {sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M, "
          f"G {sum(p.numel() for p in generator.parameters()) / 1e6:.1f}M, "
          f"flow {sum(p.numel() for p in flow.parameters()) / 1e6:.1f}M")
    for stage in args.stages.split(","):
        with torch.no_grad(), autocast:
            steps[stage](1)  # warm-up (allocator, kernels)
            rates = {}
            for batch in batches:
                if args.device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                steps[stage](batch)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                rates[batch] = batch / seconds
                ratio = rates[batch] / rates[batches[0]]
                speedup = f"  x{ratio:.2f} vs batch {batches[0]}" if batch != batches[0] else ""
                print(f"{stage:9s} batch {batch:3d}: {seconds:8.2f} s  {rates[batch]:7.3f} samples/s{speedup}",
                      flush=True)


if __name__ == "__main__":
    main()
