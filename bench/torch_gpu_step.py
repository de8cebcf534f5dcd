#!/usr/bin/env python3
"""torch_gpu_step.py: the BYOL training step of tools/ref_byol.py timed in PyTorch on a GPU, for
bench/gpu.sh to set beside byol_bench_step. Prints one JSON line per variant (the result, or
{"error": ...}); exit 1 when any variant failed, 2 on bad arguments.

    python3 bench/torch_gpu_step.py --variants fp32,tf32,bf16 --arch resnet50 --stem imagenet \\
        --size 224 --batch 128 [--warmup 3] [--steps 20] [--max-seconds 10]
    PYTHONPATH=/root/.cache/byol/py python3 bench/torch_gpu_step.py --device cpu --smoke

Variants: fp32 (NCHW, TF32 off), tf32 (channels_last, TF32 convolutions and matmuls), bf16
(channels_last, TF32, forwards under autocast bfloat16; the loss in float32). cuDNN benchmark
mode is on in all of them. The step is ref_byol's (model, loss, LARS and EMA of BYOL.md: two
views, online + target forward, symmetric loss, backward, LARS, EMA) with the optimizer and EMA
written with foreach kernels and no host synchronization; ref_byol.lars_update reads two norms
back per tensor (`if pn > 0 and gn > 0`), about 160 waits per ResNet-50 step, which would time
Python rather than the GPU. --smoke checks that this step computes exactly what
ref_byol.byol_step does (float64, two steps), then runs every variant on a tiny config.
Every step ends with loss.item() (the loop of a trainer that logs its loss), as the native step
reads its loss back. --op-times K: after the timed steps, K more under torch.profiler; the line's
op_times field holds each aten op's self time per step (device time on a GPU), as
byol_bench_step --op-times does for byol's ops.
"""
import argparse
import contextlib
import copy
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import torch  # noqa: E402

import ref_byol  # noqa: E402
from torch_step import add_model_args, model_config  # noqa: E402

VARIANTS = ("fp32", "tf32", "bf16")
MIB = 2 ** 20


class FusedLars:
    """ref_byol.lars_update over a list of parameters with foreach kernels: the same arithmetic
    (weight decay and the trust ratio eta*|p|/|g| for tensors of 2+ dims, applied only when both
    norms are positive; momentum m = mu*m + g; p -= lr*m), the condition evaluated on the device."""

    def __init__(self, params, weight_decay, eta, momentum):
        self.decay = [p for p in params if p.ndim > 1]
        self.plain = [p for p in params if p.ndim <= 1]
        self.params = self.decay + self.plain
        self.momenta = {p: torch.zeros_like(p) for p in self.params}
        self.weight_decay, self.eta, self.momentum = weight_decay, eta, momentum

    @torch.no_grad()
    def step(self, lr):
        grads = list(torch._foreach_add([p.grad for p in self.decay], self.decay, alpha=self.weight_decay))
        pn = torch.stack(torch._foreach_norm(self.decay))
        gn = torch.stack(torch._foreach_norm(grads))
        # Where a norm is 0 the division gives inf/nan, which torch.where discards.
        trust = torch.where((pn > 0) & (gn > 0), self.eta * pn / gn, torch.ones_like(pn))
        torch._foreach_mul_(grads, list(trust.unbind()))
        grads += [p.grad for p in self.plain]
        momenta = [self.momenta[p] for p in self.params]
        torch._foreach_mul_(momenta, self.momentum)
        torch._foreach_add_(momenta, grads)
        torch._foreach_add_(self.params, momenta, alpha=-lr)


class GpuStep:
    """One BYOL step of `model` (a ref_byol.BYOL): ref_byol.byol_step with FusedLars and a
    foreach EMA; `autocast` None or a dtype for the forwards."""

    def __init__(self, model, opt, autocast=None):
        self.model = model
        self.params = [p for _, p in model.online_params()]
        self.lars = FusedLars(self.params, opt["weightDecay"], opt["trustCoefficient"], opt["momentum"])
        self.online_branch = list(model.online.parameters())
        self.target_branch = list(model.target.parameters())
        self.autocast = autocast

    def online(self, x):
        z = self.model.online(x)
        return self.model.predictor(z) if self.model.predictor is not None else z

    def __call__(self, v1, v2, lr, tau):
        model = self.model
        model.train()
        ctx = (torch.autocast(device_type=v1.device.type, dtype=self.autocast) if self.autocast is not None
               else contextlib.nullcontext())
        with ctx:
            p1 = self.online(v1)
            p2 = self.online(v2)
            with torch.no_grad():  # the target in training mode, as in ref_byol.byol_step
                z1 = model.target(v1)
                z2 = model.target(v2)
        # The loss normalizes 256-d vectors and sums squares: at least float32 under autocast.
        p1, p2, z1, z2 = (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x for x in (p1, p2, z1, z2))
        loss = ref_byol.regression_loss(p1, z2) + ref_byol.regression_loss(p2, z1)
        for p in self.params:
            p.grad = None
        loss.backward()
        self.lars.step(lr)
        with torch.no_grad():
            torch._foreach_lerp_(self.target_branch, self.online_branch, 1 - tau)
        return loss.detach()


def check_against_reference(config):
    """GpuStep == ref_byol.byol_step in float64 over two steps (the second uses momentum), for
    every tensor of the state and the momenta. Returns the worst normalized error."""
    torch.manual_seed(0)
    ref = ref_byol.BYOL(config).double()
    ours = copy.deepcopy(ref)
    g = torch.Generator().manual_seed(1)
    v1 = torch.randn(6, 3, 16, 16, generator=g, dtype=torch.float64)
    v2 = torch.randn(6, 3, 16, 16, generator=g, dtype=torch.float64)
    ref_momenta = {n: torch.zeros_like(p) for n, p in ref.online_params()}
    step = GpuStep(ours, config["optimizer"])
    worst = 0.0
    for lr, tau in ((0.1, 0.9), (0.2, 0.5)):
        want = ref_byol.byol_step(ref, v1, v2, lr, tau, ref_momenta, config["optimizer"]).item()
        got = step(v1, v2, lr, tau).item()
        worst = max(worst, abs(got - want) / abs(want))
    for want, got in zip(ref.state_dict().values(), ours.state_dict().values()):
        worst = max(worst, ref_byol.normalized_error(got, want))
    # Momenta per parameter as the fixtures measure them: the pre-BatchNorm biases' exact
    # gradient is 0, so their momentum is rounding noise, measured against the whole buffer.
    want = torch.cat([ref_momenta[n].flatten() for n, _ in ref.online_params()])
    got = torch.cat([step.lars.momenta[p].flatten() for _, p in ours.online_params()])
    for _, sl in ref_byol.momentum_slices(ours):
        worst = max(worst, ref_byol.slice_error(got, want, sl))
    return worst


def configure(variant, device):
    """Backend flags of a variant; returns (memory format, autocast dtype or None)."""
    tf32 = variant != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    fmt = torch.contiguous_format if variant == "fp32" else torch.channels_last
    return fmt, (torch.bfloat16 if variant == "bf16" else None)


def versions(device):
    out = dict(torch=torch.__version__, torch_cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   gpu_memory_mb=round(props.total_memory / MIB))
    return out


def device_used_mb(device):
    free, total = torch.cuda.mem_get_info(device)
    return (total - free) / MIB


def run_variant(a, variant, device, config):
    fmt, autocast = configure(variant, device)
    cuda = device.type == "cuda"
    used_before = None
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        used_before = device_used_mb(device)
    torch.manual_seed(0)
    model = ref_byol.BYOL(config).to(device=device, memory_format=fmt)
    step = GpuStep(model, config["optimizer"], autocast)
    g = torch.Generator(device=device).manual_seed(1)
    shape = (a.batch, 3, a.size, a.size)
    v1 = torch.randn(*shape, generator=g, device=device).contiguous(memory_format=fmt)
    v2 = torch.randn(*shape, generator=g, device=device).contiguous(memory_format=fmt)
    lr, tau = 0.1, 0.99

    t0 = time.perf_counter()
    loss = float("nan")
    for _ in range(a.warmup):
        loss = step(v1, v2, lr, tau).item()
    if cuda:
        torch.cuda.synchronize(device)
    warmup_seconds = time.perf_counter() - t0

    if cuda:
        start_event = torch.cuda.Event(enable_timing=True)
        end_event = torch.cuda.Event(enable_timing=True)
        start_event.record()
    step_seconds = []
    start = time.perf_counter()
    for _ in range(a.steps):
        s0 = time.perf_counter()
        loss = step(v1, v2, lr, tau).item()
        step_seconds.append(time.perf_counter() - s0)
        if len(step_seconds) >= 2 and time.perf_counter() - start >= a.max_seconds:
            break
    gpu_seconds = None
    if cuda:
        end_event.record()
        torch.cuda.synchronize(device)
        gpu_seconds = start_event.elapsed_time(end_event) / 1000
    seconds = time.perf_counter() - start
    used_after = device_used_mb(device) if cuda else None
    profiled = a.op_times > 0 and (not a.op_times_variants or variant in a.op_times_variants.split(","))
    op_times = profile_ops(step, v1, v2, a.op_times, device) if profiled else None

    n = len(step_seconds)
    ordered = sorted(step_seconds)
    out = dict(
        engine="pytorch", variant=variant, device=str(device), arch=a.arch, stem=a.stem, width=a.width, channels=3,
        size=a.size, batch=a.batch, hidden=a.hidden, out=a.out, pred_hidden=a.hidden, optimizer="lars",
        params=sum(p.numel() for p in step.params), warmup=a.warmup, warmup_seconds=warmup_seconds, steps=n,
        seconds=seconds, gpu_seconds=gpu_seconds, steps_per_s=n / seconds, images_per_s=n * a.batch / seconds,
        ms_per_step=1000 * seconds / n, ms_per_step_median=1000 * ordered[n // 2],
        ms_per_step_min=1000 * ordered[0], ms_per_step_max=1000 * ordered[-1], loss=loss,
        peak_allocated_mb=torch.cuda.max_memory_allocated(device) / MIB if cuda else None,
        peak_reserved_mb=torch.cuda.max_memory_reserved(device) / MIB if cuda else None,
        device_used_before_mb=used_before, device_used_mb=used_after, op_times=op_times,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        channels_last=fmt is torch.channels_last, tf32=variant != "fp32",
        autocast="bfloat16" if autocast is not None else None, model_config=config)
    out.update(versions(device))
    return out


def profile_ops(step, v1, v2, steps, device):
    """`steps` more steps under torch.profiler: {"steps", "ms_per_step", "rows": [{phase, op,
    calls, ms}]} per step, each aten op's self time (device time on a GPU: the kernels it
    launched), longest first, ops under 1 us left out."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(v1, v2, 0.1, 0.99).item()
    wall_ms = 1000 * (time.perf_counter() - start) / steps
    rows = []
    for e in prof.key_averages():
        if cuda:
            total = getattr(e, "self_device_time_total", None)
            if total is None:
                total = getattr(e, "self_cuda_time_total", 0)
        else:
            total = e.self_cpu_time_total
        ms = total / 1000 / steps
        if ms >= 1e-3:
            rows.append(dict(phase="", op=e.key, calls=e.count / steps, ms=ms))
    rows.sort(key=lambda r: -r["ms"])
    return dict(steps=steps, ms_per_step=wall_ms, rows=rows)


def error_line(a, variant, device, exc):
    return dict(engine="pytorch", variant=variant, device=str(device), arch=a.arch, stem=a.stem, width=a.width,
                channels=3, size=a.size, batch=a.batch, hidden=a.hidden, out=a.out, pred_hidden=a.hidden,
                optimizer="lars", error=f"{type(exc).__name__}: {exc}", not_supported=False, **versions(device))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--op-times", type=int, default=0, metavar="K",
                    help="after the timed steps, K more under torch.profiler (field op_times; default 0: none)")
    ap.add_argument("--op-times-variants", default="", metavar="LIST",
                    help="comma-separated variants that --op-times applies to (default: all)")
    ap.add_argument("--smoke", action="store_true",
                    help="check the step against ref_byol.byol_step, then run a tiny config (ResNet-18 width 1/8, "
                         "batch 8, 32x32, heads 64/32, 1 warm-up + 2 steps)")
    add_model_args(ap)
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"expected --variants to be a comma-separated subset of {','.join(VARIANTS)} but received '{v}'")
    if a.warmup < 0 or a.steps < 1 or a.max_seconds < 0 or a.op_times < 0:
        ap.error(f"expected --warmup >= 0, --steps >= 1, --max-seconds >= 0 and --op-times >= 0 but received "
                 f"{a.warmup}, {a.steps}, {a.max_seconds}, {a.op_times}")
    try:
        device = torch.device(a.device)
    except RuntimeError as e:
        ap.error(f"expected a torch device for --device but received '{a.device}': {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {a.device}: this PyTorch ({torch.__version__}) sees no CUDA GPU")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.backends.nnpack.set_flags(False)

    failed = False
    if a.smoke:
        a.arch, a.stem, a.width, a.batch, a.size, a.hidden, a.out = "resnet18", "cifar", 0.125, 8, 32, 64, 32
        a.warmup, a.steps = 1, 2
        # float64 agreement is limited by summation order only (foreach norms vs linalg norms).
        err = check_against_reference(model_config(a))
        ok = err < 1e-10
        print(json.dumps(dict(check="GpuStep vs ref_byol.byol_step (float64, 2 steps)", worst_normalized_error=err,
                              ok=ok)))
        failed = not ok
    config = model_config(a)
    for variant in variants:
        try:
            line = run_variant(a, variant, device, config)
        except Exception as exc:  # noqa: BLE001 - one variant's failure (OOM...) is a result line
            line = error_line(a, variant, device, exc)
            failed = True
        print(json.dumps(line), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
