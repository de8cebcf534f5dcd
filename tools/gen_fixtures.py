#!/usr/bin/env python3
"""gen_fixtures.py: writes test/fixtures/ops_v1.safetensors, the PyTorch reference for every op
of the Backend interface (native/include/byol/backend.h), which native/tests/test_ops.cc checks,
and test/fixtures/interop_v1.safetensors (written by the official safetensors writer, read by
native/tests/test_safetensors.cc).

Regenerate with one command (deterministic: same torch version -> same bytes):
    PYTHONPATH=/root/.cache/byol/py python3 tools/gen_fixtures.py

Contract of the file (bump VERSION and the file name when it changes):
  * metadata "case:<name>" = JSON object of the case parameters, always with "op";
    metadata "byol.fixtures" = JSON {version, torch, generator, cases}.
  * tensor "<name>/<role>" for every input, parameter, upstream gradient, output and gradient.
  * Layouts are the core's, not torch's: activations NHWC (permuted from NCHW), conv weights
    OIHW, linear weights [out, in], argmax int32 flat h*W+w per channel plane (NHWC order).
  * Computed in float32 with torch's CPU kernels, one thread, deterministic algorithms.
    Every case is also computed in float64 from the same float32 inputs; `--report` prints
    how far torch's float32 result is from that, the error floor any fp32 backend shares.
"""
import argparse
import json
import math
import os
import sys
import zlib

try:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file
except ImportError as e:  # the project's Python packages live outside the system path
    sys.exit(f"gen_fixtures.py: {e}; run with PYTHONPATH=/root/.cache/byol/py (torch + safetensors)")

VERSION = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "fixtures", f"ops_v{VERSION}.safetensors")
INTEROP = os.path.join(ROOT, "test", "fixtures", "interop_v1.safetensors")

BN_MOMENTUM = 0.1  # PyTorch sense: new = (1 - m) * old + m * batch
BN_EPS = 1e-5


def f32(x):
    """A Python float rounded to float32, so the JSON value and the value torch used agree."""
    return float(torch.tensor(x, dtype=torch.float32).item())


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


class Cases:
    def __init__(self):
        self.tensors = {}
        self.meta = {}
        self.names = []
        self.report = []  # (case, role, max abs fp32-vs-fp64 error, max normalized error, max |ref|)

    def generator(self, name):
        # One seed per case (from its name), so adding a case never changes the others.
        return torch.Generator().manual_seed(zlib.crc32(name.encode()))

    def add(self, name, params, inputs, compute):
        """inputs: float32/int tensors (core layout where stored as-is); compute(inputs, dtype)
        returns {role: tensor} in the core layout. Inputs and outputs are stored together."""
        assert name not in self.names, name
        assert "op" in params
        outs32 = compute({k: v.clone() for k, v in inputs.items()}, torch.float32)
        as64 = {k: (v.double() if v.is_floating_point() else v.clone()) for k, v in inputs.items()}
        outs64 = compute(as64, torch.float64)
        for role, t in outs32.items():
            ref = outs64[role]
            if t.is_floating_point():
                scale = ref.abs().max().item() or 1.0
                diff = (t.double() - ref).abs()
                self.report.append((name, role, diff.max().item(), (diff / (1e-3 * scale + ref.abs())).max().item(),
                                    scale))
            else:
                assert torch.equal(t, ref), f"{name}/{role}: integer output differs in fp64 (a tie?)"
        for role, t in list(inputs.items()) + list(outs32.items()):
            key = f"{name}/{role}"
            assert key not in self.tensors, key
            t = t.detach().contiguous()
            if t.is_floating_point():
                t = t.to(torch.float32)
                assert torch.isfinite(t).all(), key
            self.tensors[key] = t
        self.meta["case:" + name] = json.dumps(params, sort_keys=True)
        self.names.append(name)


def randn(g, *shape, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale + shift


def uniform(g, *shape, lo=0.0, hi=1.0):
    return torch.rand(*shape, generator=g, dtype=torch.float32) * (hi - lo) + lo


# ---------------------------------------------------------------------------------------
def conv2d_cases(c):
    grid = [
        # (N, H, W, C, K, R, stride, pad): 1x1, 3x3 and 7x7; odd sizes, batch 1, C not a
        # multiple of 8; includes the ResNet shapes (stem 7x7/2 p3, downsample 1x1/2, 3x3/2 p1
        # on an even map, a 2x2 map that a 3x3/2 conv reduces to 1x1).
        (2, 5, 7, 5, 17, 1, 1, 0),
        (1, 9, 9, 17, 8, 1, 2, 0),
        (2, 8, 6, 16, 32, 1, 2, 0),
        (2, 7, 5, 3, 5, 3, 1, 1),
        (1, 6, 5, 8, 3, 3, 1, 0),
        (2, 9, 7, 5, 17, 3, 2, 1),
        (1, 8, 8, 16, 32, 3, 2, 1),
        (3, 2, 2, 5, 3, 3, 2, 1),
        (1, 1, 1, 17, 5, 3, 1, 1),
        (2, 11, 9, 3, 8, 7, 2, 3),
        (1, 7, 7, 3, 5, 7, 1, 3),
        (1, 13, 12, 1, 4, 7, 2, 3),
    ]
    for N, H, W, C, K, R, stride, pad in grid:
        name = f"conv2d/{R}x{R}_s{stride}_p{pad}/n{N}_h{H}_w{W}_c{C}_k{K}"
        g = c.generator(name)
        P = (H + 2 * pad - R) // stride + 1
        Q = (W + 2 * pad - R) // stride + 1
        x = randn(g, N, C, H, W)
        # He-scaled weights keep outputs O(1), as in a trained network's early layers.
        w = randn(g, K, C, R, R, scale=math.sqrt(2.0 / (C * R * R)))
        dy = randn(g, N, K, P, Q)

        def compute(i, dtype):
            x = nhwc_to_nchw(i["inp"]).requires_grad_()
            w = i["weight"].requires_grad_()
            y = F.conv2d(x, w, stride=stride, padding=pad)
            y.backward(nhwc_to_nchw(i["dout"]))
            return {"out": nhwc(y.detach()), "dinp": nhwc(x.grad), "dweight": w.grad}

        params = dict(op="conv2d", N=N, H=H, W=W, C=C, K=K, R=R, S=R, stride=stride, pad=pad)
        c.add(name, params, {"inp": nhwc(x), "weight": w, "dout": nhwc(dy)}, compute)


def nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------
def batchnorm_cases(c):
    # 2-D: (N, H, W, C) NHWC, statistics over M = N*H*W rows; 1-D: (M, C) (the MLP heads).
    # small_var: channel scales from 1e-3 to 1 (variances down to ~eps), where eps placement
    # (inside the square root, added to the biased variance) changes the result visibly.
    grid = [("2d", (2, 5, 3, 5), ""), ("2d", (1, 3, 3, 17), ""), ("2d", (4, 2, 2, 3), ""),
            ("2d", (2, 4, 4, 32), ""), ("2d", (2, 3, 3, 8), "small_var"), ("1d", (8, 17), ""),
            ("1d", (2, 5), ""), ("1d", (16, 64), ""), ("1d", (5, 3), "")]
    for kind, shape, variant in grid:
        C = shape[-1]
        M = math.prod(shape[:-1])
        name = f"batchnorm{kind}/" + "_".join(f"{k}{v}" for k, v in zip(
            ("n", "h", "w", "c") if kind == "2d" else ("m", "c"), shape)) + (f"_{variant}" if variant else "")
        g = c.generator(name)
        # Per-channel offsets and scales like pre-BN conv outputs; gamma around 1 with one
        # negative entry, running stats from an earlier step.
        if variant == "small_var":
            # Offsets proportional to the scale: an offset of 1 on a channel of std 1e-3 loses
            # ~ulp(1) * rstd = 2e-5 in x - mean, an fp32 limit rather than what this case tests.
            scale = torch.logspace(-3, 0, C, dtype=torch.float32)
            shift = uniform(g, C, lo=-2.0, hi=2.0) * scale
        else:
            scale, shift = uniform(g, C, lo=0.5, hi=2.0), uniform(g, C, lo=-1.0, hi=1.0)
        x = randn(g, *shape) * scale + shift
        gamma = randn(g, C, scale=0.3, shift=1.0)
        gamma[0] = -0.7
        beta = randn(g, C, scale=0.2)
        rmean = randn(g, C, scale=0.1)
        rvar = uniform(g, C, lo=0.5, hi=1.5)
        dy = randn(g, *shape)

        def compute(i, dtype):
            x = i["inp"]
            xt = (nhwc_to_nchw(x) if x.dim() == 4 else x).clone().requires_grad_()
            gm = i["gamma"].clone().requires_grad_()
            bt = i["beta"].clone().requires_grad_()
            rm, rv = i["running_mean"].clone(), i["running_var"].clone()
            y, smean, srstd = torch.ops.aten.native_batch_norm(xt, gm, bt, rm, rv, True, BN_MOMENTUM, BN_EPS)
            dyt = nhwc_to_nchw(i["dout"]) if x.dim() == 4 else i["dout"]
            y.backward(dyt)
            y_eval = F.batch_norm(xt.detach(), i["running_mean"], i["running_var"], i["gamma"], i["beta"],
                                  training=False, eps=BN_EPS)
            back = nhwc if x.dim() == 4 else (lambda t: t)
            return {"out": back(y.detach()), "save_mean": smean, "save_rstd": srstd,
                    "running_mean_out": rm, "running_var_out": rv, "dinp": back(xt.grad),
                    "dgamma": gm.grad, "dbeta": bt.grad, "out_eval": back(y_eval)}

        params = dict(op="batchnorm", M=M, C=C, momentum=f32(BN_MOMENTUM), eps=f32(BN_EPS), dims=kind,
                      shape=list(shape))
        c.add(name, params, {"inp": x, "gamma": gamma, "beta": beta, "running_mean": rmean,
                             "running_var": rvar, "dout": dy}, compute)


# ---------------------------------------------------------------------------------------
def elementwise_cases(c):
    for shape in [(1037,), (2, 5, 7, 17), (1, 3, 3, 8)]:
        n = math.prod(shape)
        name = f"relu/n{n}"
        g = c.generator(name)
        x = randn(g, *shape)
        x[x == 0] = 0.5  # the mask at exactly 0 is convention, not semantics: avoid it
        dy = randn(g, *shape)

        def compute(i, dtype):
            x = i["inp"].clone().requires_grad_()
            y = F.relu(x)
            y.backward(i["dout"])
            return {"out": y.detach(), "dinp": x.grad}

        c.add(name, dict(op="relu", n=n, shape=list(shape)), {"inp": x, "dout": dy}, compute)

    for shape in [(2, 5, 7, 17), (1, 1, 1, 5), (3, 4, 4, 64)]:
        n = math.prod(shape)
        name = f"add/n{n}"
        g = c.generator(name)
        a, b = randn(g, *shape), randn(g, *shape, scale=0.5)
        c.add(name, dict(op="add", n=n, shape=list(shape)), {"a": a, "b": b},
              lambda i, dtype: {"out": i["a"] + i["b"]})

    for n, tau in [(1031, 0.996), (4099, 0.99), (7, 0.5), (64, 1.0)]:
        name = f"ema/n{n}_tau{tau}"
        g = c.generator(name)
        tau = f32(tau)
        target, online = randn(g, n, scale=0.1), randn(g, n, scale=0.1)

        def compute(i, dtype, tau=tau):
            t = i["target"]
            return {"target_out": t + (1.0 - tau) * (i["online"] - t)}

        c.add(name, dict(op="ema", n=n, tau=tau), {"target": target, "online": online}, compute)


# ---------------------------------------------------------------------------------------
def pool_cases(c):
    for N, H, W, C in [(2, 9, 9, 5), (1, 8, 7, 17), (2, 4, 4, 3), (1, 2, 3, 8), (2, 16, 16, 16)]:
        k, stride, pad = 3, 2, 1
        name = f"maxpool/3x3_s2_p1/n{N}_h{H}_w{W}_c{C}"
        g = c.generator(name)
        n = N * C * H * W
        # A permutation of distinct values: no ties, so argmax is unique and the backward of
        # every implementation routes the gradient to the same pixel.
        x = (torch.randperm(n, generator=g).to(torch.float32) / n * 6.0 - 3.0).reshape(N, C, H, W)
        P = (H + 2 * pad - k) // stride + 1
        Q = (W + 2 * pad - k) // stride + 1
        dy = randn(g, N, P, Q, C)

        def compute(i, dtype):
            x = nhwc_to_nchw(i["inp"]).requires_grad_()
            y, idx = F.max_pool2d(x, k, stride, pad, return_indices=True)
            y.backward(nhwc_to_nchw(i["dout"]))
            return {"out": nhwc(y.detach()), "argmax": nhwc(idx).to(torch.int32), "dinp": nhwc(x.grad)}

        params = dict(op="maxpool", N=N, H=H, W=W, C=C, kernel=k, stride=stride, pad=pad)
        c.add(name, params, {"inp": nhwc(x), "dout": dy}, compute)

    for N, H, W, C in [(2, 7, 5, 17), (1, 1, 1, 8), (3, 4, 4, 64), (2, 3, 3, 5)]:
        name = f"avgpool/n{N}_h{H}_w{W}_c{C}"
        g = c.generator(name)
        x = randn(g, N, H, W, C, shift=0.5)
        dy = randn(g, N, C)

        def compute(i, dtype):
            x = nhwc_to_nchw(i["inp"]).requires_grad_()
            y = F.adaptive_avg_pool2d(x, 1).flatten(1)
            y.backward(i["dout"])
            return {"out": y.detach(), "dinp": nhwc(x.grad)}

        c.add(name, dict(op="avgpool", N=N, H=H, W=W, C=C, HW=H * W), {"inp": x, "dout": dy}, compute)


# ---------------------------------------------------------------------------------------
def linear_cases(c):
    for B, I, O, bias in [(5, 17, 8, True), (1, 3, 5, False), (8, 64, 33, True), (4, 32, 16, False),
                          (2, 9, 1, True)]:
        name = f"linear/b{B}_i{I}_o{O}_" + ("bias" if bias else "nobias")
        g = c.generator(name)
        x = randn(g, B, I)
        w = randn(g, O, I, scale=1.0 / math.sqrt(I))
        inputs = {"inp": x, "weight": w, "dout": randn(g, B, O)}
        if bias:
            inputs["bias"] = randn(g, O, scale=0.1)

        def compute(i, dtype, bias=bias):
            x = i["inp"].clone().requires_grad_()
            w = i["weight"].clone().requires_grad_()
            b = i["bias"].clone().requires_grad_() if bias else None
            y = F.linear(x, w, b)
            y.backward(i["dout"])
            out = {"out": y.detach(), "dinp": x.grad, "dweight": w.grad}
            if bias:
                out["dbias"] = b.grad
            return out

        c.add(name, dict(op="linear", B=B, I=I, O=O, bias=bias), inputs, compute)


# ---------------------------------------------------------------------------------------
def byol_normalize(x):
    # BYOL.md / backend.h: n(x) = x * rsqrt(max(|x|^2, 1e-12)). Same as F.normalize for every
    # row that is not ~0; at a zero row the gradient flows through the clamp constant
    # (1e6 * upstream), as in the reference implementation's l2_normalize.
    return x * torch.rsqrt(torch.clamp_min((x * x).sum(-1, keepdim=True), 1e-12))


def loss_cases(c):
    for B, D, zero_rows in [(4, 16, None), (1, 5, None), (8, 64, (2, 5)), (3, 256, None)]:
        name = f"byol_loss/b{B}_d{D}" + ("_zero_rows" if zero_rows else "")
        g = c.generator(name)
        # Rows of very different norms: the loss must not depend on them.
        p = randn(g, B, D) * uniform(g, B, 1, lo=0.1, hi=10.0)
        z = randn(g, B, D) * uniform(g, B, 1, lo=0.1, hi=10.0)
        if zero_rows:
            p[zero_rows[0]] = 0.0  # a dead predictor output
            z[zero_rows[1]] = 0.0  # a dead target output
        dloss = 0.75

        def compute(i, dtype, dloss=dloss):
            p = i["p"].clone().requires_grad_()
            loss = ((byol_normalize(p) - byol_normalize(i["z"])) ** 2).sum(-1).mean()
            loss.backward(torch.tensor(dloss, dtype=dtype))
            return {"loss": loss.detach().reshape(1), "dp": p.grad}

        params = dict(op="byol_loss", B=B, D=D, dloss=dloss, zero_rows=list(zero_rows or []))
        c.add(name, params, {"p": p, "z": z}, compute)

    for B, K, scale in [(5, 10, 1.0), (1, 3, 1.0), (16, 100, 20.0), (7, 2, 3.0)]:
        name = f"cross_entropy/b{B}_k{K}" + ("_large_logits" if scale > 5 else "")
        g = c.generator(name)
        logits = randn(g, B, K, scale=scale, shift=2.0 if scale > 5 else 0.0)
        labels = torch.randint(0, K, (B,), generator=g, dtype=torch.int32)
        dloss = 1.25

        def compute(i, dtype, dloss=dloss):
            x = i["logits"].clone().requires_grad_()
            loss = F.cross_entropy(x, i["labels"].long())
            loss.backward(torch.tensor(dloss, dtype=dtype))
            return {"loss": loss.detach().reshape(1), "probs": torch.softmax(x.detach(), -1), "dlogits": x.grad}

        c.add(name, dict(op="cross_entropy", B=B, K=K, dloss=dloss), {"logits": logits, "labels": labels}, compute)


# ---------------------------------------------------------------------------------------
# Optimizers over a flat buffer with segments (weights with decay, a bias and BN parameters
# without, a weight whose gradient is all zero: LARS must then skip the trust ratio).
SEGMENTS = [dict(offset=0, size=300, decay=True), dict(offset=300, size=17, decay=False),
            dict(offset=317, size=64, decay=True), dict(offset=381, size=34, decay=False),
            dict(offset=415, size=27, decay=True)]
ZERO_GRAD_SEGMENT = 4


def optimizer_inputs(g, with_state2=False):
    n = SEGMENTS[-1]["offset"] + SEGMENTS[-1]["size"]
    params = randn(g, n, scale=0.2)
    grads = randn(g, n, scale=0.01)
    s = SEGMENTS[ZERO_GRAD_SEGMENT]
    grads[s["offset"]:s["offset"] + s["size"]] = 0.0
    state = randn(g, n, scale=0.01)
    inputs = {"params": params, "grads": grads, "state": state}
    if with_state2:
        inputs["state"] = torch.cat([state, uniform(g, n, lo=1e-6, hi=1e-4)])  # exp_avg, exp_avg_sq
    return inputs


def segments_of(t):
    return [t[s["offset"]:s["offset"] + s["size"]] for s in SEGMENTS]


def optimizer_cases(c):
    # LARS as in BYOL.md (reference implementation): wd and trust ratio only where decay.
    # wd = 0 with an all-zero gradient segment: |g| = 0 must skip the trust ratio, not give 0/0.
    for lr, wd, momentum, eta in [(0.2, 1.5e-6, 0.9, 1e-3), (1.5, 1e-2, 0.9, 1e-3), (0.5, 0.0, 0.9, 1e-3)]:
        name = f"lars/lr{lr}_wd{wd}"
        g = c.generator(name)
        lr, wd, momentum, eta = f32(lr), f32(wd), f32(momentum), f32(eta)

        def compute(i, dtype, lr=lr, wd=wd, momentum=momentum, eta=eta):
            p, m = i["params"].clone(), i["state"].clone()
            for s, ps, ms, gs in zip(SEGMENTS, segments_of(p), segments_of(m), segments_of(i["grads"])):
                gs = gs.clone()
                if s["decay"]:
                    gs = gs + wd * ps
                    pn, gn = ps.norm(), gs.norm()
                    if pn > 0 and gn > 0:
                        gs = gs * (eta * pn / gn)
                ms.copy_(momentum * ms + gs)
                ps.sub_(lr * ms)
            return {"params_out": p, "state_out": m}

        params = dict(op="lars", lr=lr, weight_decay=wd, momentum=momentum, trust_coefficient=eta,
                      eps=0.0, solo_learn=False, segments=SEGMENTS)
        c.add(name, params, optimizer_inputs(g), compute)

    # SGD and AdamW: torch.optim itself is the reference (single-tensor path), one parameter
    # tensor per segment, weight decay 0 for segments without decay.
    def run_torch_opt(i, make, state_init):
        p = i["params"].clone()
        views = [p[s["offset"]:s["offset"] + s["size"]].clone().requires_grad_() for s in SEGMENTS]
        for v, gs in zip(views, segments_of(i["grads"])):
            v.grad = gs.clone()
        groups = [dict(params=[v], weight_decay=None if s["decay"] else 0.0) for v, s in zip(views, SEGMENTS)]
        opt = make(groups)
        for v, s in zip(views, SEGMENTS):
            opt.state[v] = state_init(s)
        opt.step()
        out_p = torch.cat([v.detach() for v in views])
        return opt, views, out_p

    for lr, wd, momentum, nesterov in [(0.1, 5e-4, 0.9, False), (0.05, 1e-4, 0.9, True)]:
        name = f"sgd/lr{lr}_wd{wd}" + ("_nesterov" if nesterov else "")
        g = c.generator(name)
        lr, wd, momentum = f32(lr), f32(wd), f32(momentum)

        def compute(i, dtype, lr=lr, wd=wd, momentum=momentum, nesterov=nesterov):
            def make(groups):
                for gr in groups:
                    gr["weight_decay"] = wd if gr["weight_decay"] is None else 0.0
                return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, foreach=False)

            def state_init(s):
                return {"momentum_buffer": i["state"][s["offset"]:s["offset"] + s["size"]].clone()}

            opt, views, out_p = run_torch_opt(i, make, state_init)
            return {"params_out": out_p, "state_out": torch.cat([opt.state[v]["momentum_buffer"] for v in views])}

        params = dict(op="sgd", lr=lr, weight_decay=wd, momentum=momentum, nesterov=nesterov, segments=SEGMENTS)
        c.add(name, params, optimizer_inputs(g), compute)

    for lr, wd, step in [(1e-3, 0.05, 1), (3e-4, 0.01, 10)]:
        name = f"adamw/lr{lr}_wd{wd}_step{step}"
        g = c.generator(name)
        lr, wd, b1, b2, eps = f32(lr), f32(wd), f32(0.9), f32(0.999), f32(1e-8)
        n = SEGMENTS[-1]["offset"] + SEGMENTS[-1]["size"]

        def compute(i, dtype, lr=lr, wd=wd, b1=b1, b2=b2, eps=eps, step=step, n=n):
            def make(groups):
                for gr in groups:
                    gr["weight_decay"] = wd if gr["weight_decay"] is None else 0.0
                return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps, foreach=False)

            def state_init(s):
                o, z = s["offset"], s["size"]
                return {"step": torch.tensor(float(step - 1), dtype=torch.float32),
                        "exp_avg": i["state"][o:o + z].clone(), "exp_avg_sq": i["state"][n + o:n + o + z].clone()}

            opt, views, out_p = run_torch_opt(i, make, state_init)
            state = torch.cat([torch.cat([opt.state[v]["exp_avg"] for v in views]),
                               torch.cat([opt.state[v]["exp_avg_sq"] for v in views])])
            return {"params_out": out_p, "state_out": state}

        params = dict(op="adamw", lr=lr, weight_decay=wd, beta1=b1, beta2=b2, eps=eps, step=step, segments=SEGMENTS)
        c.add(name, params, optimizer_inputs(g, with_state2=True), compute)


# ---------------------------------------------------------------------------------------
DTYPES = {torch.float32: "F32", torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8"}


def write_safetensors(path, tensors, metadata):
    """safetensors.torch.save_file emits __metadata__ in hash order, so its bytes change from
    run to run; this writer sorts everything (larger elements first, then by name), making the fixture reproducible byte for byte."""
    header, chunks, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors, key=lambda n: (-tensors[n].element_size(), n)):  # aligned data
        t = tensors[name]
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data section 8-byte aligned, as the format asks
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for data in chunks:
            f.write(data)


def write_interop_file(path):
    """A small file written by the official writer (safetensors.torch.save_file), which the
    runner reads to check the C++ reader against the reference implementation's output.
    One metadata key only: save_file orders metadata by hash, this keeps the bytes stable."""
    tensors = {
        "online.encoder.conv1.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2) * 0.5 - 3.0,
        "online.encoder.bn1.num_batches_tracked": torch.tensor(123456789012, dtype=torch.int64),
        "labels": torch.tensor([-3, 0, 7, 2147483647], dtype=torch.int32),
        "pixels": torch.arange(7, dtype=torch.uint8) * 37,
        "half": torch.tensor([1.5, -2.0, 0.25], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -0.5], dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }
    save_file(tensors, path, metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT, help="output file (default: %(default)s)")
    ap.add_argument("--report", action="store_true", help="print the fp32-vs-fp64 error of every output")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)  # fixed reduction order: the same bytes on every run
    torch.use_deterministic_algorithms(True)
    torch.backends.nnpack.set_flags(False)  # unused on CPUs without it; silences its warning

    c = Cases()
    conv2d_cases(c)
    batchnorm_cases(c)
    elementwise_cases(c)
    pool_cases(c)
    linear_cases(c)
    loss_cases(c)
    optimizer_cases(c)

    c.meta["byol.fixtures"] = json.dumps({"version": VERSION, "torch": torch.__version__,
                                          "generator": "tools/gen_fixtures.py", "cases": len(c.names)})
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    write_safetensors(tmp, c.tensors, c.meta)
    loaded = load_file(tmp)  # the reference reader must accept it and read the same values
    assert loaded.keys() == c.tensors.keys() and all(torch.equal(loaded[k], v) for k, v in c.tensors.items())
    os.replace(tmp, args.out)
    write_interop_file(os.path.join(os.path.dirname(args.out), os.path.basename(INTEROP)))

    if args.report:
        worst = {}
        for name, role, abs_err, rel_err, scale in c.report:
            op = name.split("/")[0] + "/" + role
            w = worst.setdefault(op, [0.0, "", 0.0, "", 0.0])
            if abs_err > w[0]:
                w[0:2] = abs_err, name
            if rel_err > w[2]:
                w[2:4] = rel_err, name
            w[4] = max(w[4], scale)
        print("fp32 torch vs fp64, worst case per op/output: max |d|; max |d|/(1e-3*max|ref| + |ref|); max |ref|")
        for op in sorted(worst):
            w = worst[op]
            print(f"  {op:30s} abs {w[0]:.1e} ({w[1]})  rel {w[2]:.1e} ({w[3]})  |ref| {w[4]:.2g}")
    size = os.path.getsize(args.out)
    print(f"wrote {os.path.relpath(args.out, ROOT)}: {len(c.names)} cases, {len(c.tensors)} tensors, "
          f"{size / 1024:.0f} KiB")


if __name__ == "__main__":
    sys.exit(main())
