#!/usr/bin/env python3
"""torch_step.py: the BYOL training step of tools/ref_byol.py (the same model, loss, LARS and EMA
as the native step) timed in PyTorch on the CPU, for bench/step_cpu.mjs to compare against.

    PYTHONPATH=/root/.cache/byol/py python3 bench/torch_step.py --threads 2 --steps 20

Prints one JSON line: {"steps_per_s", "ms_per_step", "threads", "peak_rss_mb", "rss_mb" (after
warm-up and at the end), "torch", "config", "bf16", "channels_last"}. Default: ResNet-18 cifar
stem, batch 64, 32x32x3, projector 4096/256, predictor 4096, LARS (BYOL.md), random views, the
same lr/tau every step; --bf16 runs it under CPU autocast to bfloat16; --channels-last keeps the
model's weights and the views in PyTorch's NHWC memory format (its convolutions then skip the
NCHW reorders; byol's activations are NHWC throughout).
add_model_args/model_config are shared with bench/torch_gpu_step.py (the GPU variant of this).
"""
import argparse
import contextlib
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import torch  # noqa: E402

import ref_byol  # noqa: E402


def add_model_args(ap):
    """The model and batch flags shared with bench/torch_gpu_step.py (byol_bench_step spells
    them the same way)."""
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--arch", default="resnet18", choices=sorted(ref_byol.ARCHS))
    ap.add_argument("--stem", default="cifar", choices=["cifar", "imagenet"])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--out", type=int, default=256)


def model_config(a):
    """ref_byol's config dict (the JavaScript option names) for parsed add_model_args flags:
    projector hidden/out, predictor hidden = projector hidden, LARS as in BYOL.md."""
    return dict(encoder=dict(arch=a.arch, stem=a.stem, inChannels=3, width=a.width),
                projector=dict(hidden=a.hidden, out=a.out), predictor=dict(hidden=a.hidden),
                optimizer=dict(name="lars", weightDecay=1.5e-6, momentum=0.9, trustCoefficient=1e-3))


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true",
                    help="run the step under torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument("--channels-last", action="store_true",
                    help="weights and views in torch.channels_last memory format")
    add_model_args(ap)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    config = model_config(a)
    torch.manual_seed(0)
    model = ref_byol.BYOL(config)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    momenta = {n: torch.zeros_like(p) for n, p in model.online_params()}
    g = torch.Generator().manual_seed(1)
    v1 = torch.randn(a.batch, 3, a.size, a.size, generator=g)
    v2 = torch.randn(a.batch, 3, a.size, a.size, generator=g)
    if a.channels_last:
        v1 = v1.contiguous(memory_format=torch.channels_last)
        v2 = v2.contiguous(memory_format=torch.channels_last)

    def step():
        precision = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()
        with precision:
            return ref_byol.byol_step(model, v1, v2, 0.1, 0.99, momenta, config["optimizer"]).item()

    for _ in range(a.warmup):
        step()
    rss_start = rss_mb()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    elapsed = time.perf_counter() - start
    print(json.dumps(dict(
        steps_per_s=a.steps / elapsed, ms_per_step=1000 * elapsed / a.steps, steps=a.steps,
        threads=torch.get_num_threads(), loss=loss, rss_mb=[round(rss_start, 1), round(rss_mb(), 1)],
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        torch=torch.__version__, config=config, batch=a.batch, size=a.size, bf16=a.bf16,
        channels_last=a.channels_last)))


if __name__ == "__main__":
    main()
