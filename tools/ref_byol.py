#!/usr/bin/env python3
"""ref_byol.py: the BYOL training step of BYOL.md (the project's algorithm notes) in plain PyTorch (no torchvision:
the modules carry torchvision's names), and the generator of the step fixtures that
native/tests/test_step.cc and test/byol.test.mjs check the native step against.

Regenerate the fixtures (same tensors for a given torch version; the safetensors writer may
order metadata keys differently, so bytes can differ):
    PYTHONPATH=/root/.cache/byol/py python3 tools/ref_byol.py
Print how far PyTorch's own float32 step is from float64 (the error floor any fp32 engine has):
    PYTHONPATH=/root/.cache/byol/py python3 tools/ref_byol.py --report
Check that an encoder file written by saveEncoder() loads strictly into torchvision's ResNet
layout (resnet18/34/50 with the given stem; fc = Identity):
    PYTHONPATH=/root/.cache/byol/py python3 tools/ref_byol.py --check-encoder enc.safetensors \
        --arch resnet18 --stem cifar [--width 1] [--in-channels 3] [--images x.safetensors]

Fixture contract (one pair of files per case, FORMAT below):
  step_<case>_init.safetensors  a weights file exactly as ByolModel::save_weights writes it
      (online.encoder.*, online.projector.*, predictor.*, target.*; num_batches_tracked int64
      scalars), loadable with loadWeights() and with torch's load_state_dict(strict=True).
  step_<case>_ref.safetensors   views "view1", "view2" (N, C, H, W float32, NCHW); for step
      k = 1..K: "step<k>/loss" (scalar), "step<k>/<name>" for every tensor of the weights file
      and "step<k>/optimizer.momentum" (the flat LARS momentum in the online layout's order:
      encoder, projector, predictor, each tensor in named_parameters() order), so "step<k>/"
      is a complete state a model can be loaded from; and "eval/y", "eval/z", "eval/z_target":
      the eval-mode encoder output and online / target projections of view1 from the final
      state (what embed() and project() return). Values are the float64 computation from the
      float32 start, rounded to float32 (the exact answer, not PyTorch's fp32 rounding).
      Metadata "byol.step_fixture" = JSON {format, case, config, batch, size, seed, lr[], tau[],
      torch, loss[], loss_fp32_chain[], relu_margin[], floor_forced{}, floor_chained{}}:
      floor_* map "<k>/<kind>" (kind: online, predictor, target, running, momentum, eval) to
      [worst normalized error, tensor] of PyTorch float32 against the exact state, one step
      from the exact state k-1 (forced) or k steps from the start (chained). The normalized
      error of a tensor is max|got - ref| / max|ref|.
"""
import argparse
import copy
import json
import math
import os
import sys

import torch

torch.backends.nnpack.set_flags(False)  # unsupported on most CI CPUs; it only warns
import torch.nn as nn
import torch.nn.functional as F

FORMAT = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "test", "fixtures")
BN_MOMENTUM = 0.1
BN_EPS = 1e-5


# ---------------------------------------------------------------------------------------
# Networks (torchvision's module names, so state_dict keys match torchvision's resnet).

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 conv)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


ARCHS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
         "resnet50": (Bottleneck, [3, 4, 6, 3])}


class ResNet(nn.Module):
    """torchvision.models.ResNet with a width multiplier and the two stems of BYOL.md.
    fc is Identity: the encoder output is the pooled y."""

    def __init__(self, arch="resnet18", stem="cifar", in_channels=3, width=1.0):
        super().__init__()
        block, layers = ARCHS[arch]
        base = int(round(64 * width))
        assert abs(64 * width - base) < 1e-9 and base >= 1, "64*width must be a positive integer"
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, base, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, base, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = base
        self.layer1 = self._make_layer(block, base, layers[0], 1)
        self.layer2 = self._make_layer(block, base * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.feature_dim = base * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class MLP(nn.Module):
    """Linear(in, hidden) -> BatchNorm1d -> ReLU -> Linear(hidden, out, no bias)."""

    def __init__(self, dim_in, hidden, dim_out):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, dim_out, bias=False))

    def forward(self, x):
        return self.net(x)


class Branch(nn.Module):
    def __init__(self, encoder, projector):
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def forward(self, x):
        return self.projector(self.encoder(x))


class BYOL(nn.Module):
    """state_dict names = BYOL.md "Weights": online.encoder.*, online.projector.*, predictor.*,
    target.encoder.*, target.projector.*."""

    def __init__(self, cfg):
        super().__init__()
        enc = cfg["encoder"]
        encoder = ResNet(enc["arch"], enc["stem"], enc["inChannels"], enc["width"])
        self.online = Branch(encoder, MLP(encoder.feature_dim, cfg["projector"]["hidden"], cfg["projector"]["out"]))
        out = cfg["projector"]["out"]
        self.predictor = MLP(out, cfg["predictor"]["hidden"], out) if cfg["predictor"] else None
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)

    def online_params(self):
        """(name, parameter) of the online network in the flat layout's order: encoder,
        projector, predictor (ByolModel's offsets table)."""
        out = [("online." + n, p) for n, p in self.online.named_parameters()]
        if self.predictor is not None:
            out += [("predictor." + n, p) for n, p in self.predictor.named_parameters()]
        return out


def normalize(x):
    # BYOL.md: n(x) = x * rsqrt(max(|x|^2, 1e-12))
    return x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=1e-12))


def regression_loss(p, z):
    return ((normalize(p) - normalize(z)) ** 2).sum(-1).mean()


@torch.no_grad()
def lars_update(params, momenta, lr, weight_decay, eta, momentum):
    """BYOL.md "LARS, as in the reference implementation". 1-D tensors (biases, BN) skip
    weight decay and the trust ratio."""
    for name, p in params:
        g = p.grad
        if p.ndim > 1:
            g = g + weight_decay * p
            pn = torch.linalg.vector_norm(p)
            gn = torch.linalg.vector_norm(g)
            if pn > 0 and gn > 0:
                g = g * (eta * pn / gn)
        m = momenta[name]
        m.mul_(momentum).add_(g)
        p.sub_(lr * m)


def byol_step(model, v1, v2, lr, tau, momenta, opt):
    """One training step (BYOL.md "One training step"). Returns the loss (a 0-d tensor)."""
    model.train()
    online = lambda x: model.predictor(model.online(x)) if model.predictor is not None else model.online(x)
    # Each view separately: BatchNorm statistics are per view.
    p1 = online(v1)
    p2 = online(v2)
    with torch.no_grad():  # target in training mode: batch statistics, running stats updated
        z1 = model.target(v1)
        z2 = model.target(v2)
    loss = regression_loss(p1, z2) + regression_loss(p2, z1)
    params = model.online_params()
    for _, p in params:
        p.grad = None
    loss.backward()
    lars_update(params, momenta, lr, opt["weightDecay"], opt["trustCoefficient"], opt["momentum"])
    with torch.no_grad():
        for t, o in zip(model.target.parameters(), model.online.parameters()):
            t.add_((1 - tau) * (o - t))
    return loss.detach()


# ---------------------------------------------------------------------------------------
# Fixtures.
#
# Why the checks are teacher-forced: a float32 BYOL step is not a well-conditioned function of
# its input state. A ReLU input within rounding distance of 0 flips its gradient mask between
# two correct fp32 engines (the true gradient is discontinuous there), and BatchNorm over few
# rows amplifies rounding; after one step the two runs follow different trajectories (PyTorch
# float32 against float64 already differs by O(1) after 2 steps of the ResNet-50 case). So
# every step k is checked starting from the exact state k-1 (loaded from this file), where both
# engines meet the same near-ties only by chance; seeds are chosen so that every ReLU input of
# the online forwards stays at least MIN_MARGIN (relative to its tensor's std) away from 0.
# The ResNet-18 case is also well-conditioned as a free 3-step chain (its floors say so).

CASES = {
    # ResNet-18, cifar stem, width 1/32 (stages 2, 4, 8, 16 channels; y is 16-d): every layer
    # type, downsample and BatchNorm of the basic-block network at a fixture size of ~0.8 MB.
    "r18_cifar": dict(
        config=dict(encoder=dict(arch="resnet18", stem="cifar", inChannels=3, width=0.03125),
                    projector=dict(hidden=64, out=32), predictor=dict(hidden=64),
                    optimizer=dict(name="lars", weightDecay=1.5e-6, momentum=0.9, trustCoefficient=1e-3)),
        batch=8, size=16, seed=9, lr=[0.1, 0.2, 0.1], tau=[0.9, 0.5, 0.99]),
    # ResNet-50 (bottleneck v1.5, stride on the 3x3), imagenet stem (7x7/2 + max-pool),
    # one input channel, width 1/32 (bottlenecks of 2..16 channels, 64-d y), 48x48 images so
    # that layer4 still has 2x2 positions (BatchNorm over 4 rows per image is ill-conditioned).
    # One step: the multi-step semantics (momentum, EMA of a moved target) are the ResNet-18
    # case's; this one adds the bottleneck, the imagenet stem and one-channel input, and keeps
    # the fixtures under 2 MB.
    "r50_imagenet": dict(
        config=dict(encoder=dict(arch="resnet50", stem="imagenet", inChannels=1, width=0.03125),
                    projector=dict(hidden=32, out=16), predictor=dict(hidden=32),
                    optimizer=dict(name="lars", weightDecay=1.5e-6, momentum=0.9, trustCoefficient=1e-3)),
        batch=8, size=48, seed=6, lr=[0.1], tau=[0.9]),
}
# LARS moves trust-ratio tensors by lr * 1e-3 of their norm per step and BatchNorm/bias
# tensors by lr * gradient: rates of 0.1-0.2 move every tensor measurably. The taus are small
# so that the EMA moves the target by a checkable amount (0.99 is a real-run value).


def make_model(case, dtype):
    torch.manual_seed(case["seed"])
    return BYOL(case["config"]).to(dtype)


def make_views(case):
    g = torch.Generator().manual_seed(1000 + case["seed"])
    enc = case["config"]["encoder"]
    shape = (case["batch"], enc["inChannels"], case["size"], case["size"])
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def snapshot(model, momenta):
    """Every tensor of a weights file plus the flat LARS momentum in the layout's order."""
    out = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out["optimizer.momentum"] = torch.cat([momenta[n].flatten() for n, _ in model.online_params()])
    return out


def restore(model, state):
    """Loads a snapshot into `model` (any dtype) and returns the momenta."""
    model.load_state_dict({k: v for k, v in state.items() if k != "optimizer.momentum"}, strict=True)
    flat, momenta, at = state["optimizer.momentum"], {}, 0
    for n, p in model.online_params():
        momenta[n] = flat[at:at + p.numel()].view_as(p).to(p.dtype).clone()
        at += p.numel()
    return momenta


def relu_margin_hooks(model, record):
    """Records min |x| / std(x) over the ReLU inputs of the online network and predictor."""
    def pre(_mod, inp):
        x = inp[0].detach()
        record[0] = min(record[0], x.abs().min().item() / max(x.std().item(), 1e-30))
    mods = list(model.online.modules()) + (list(model.predictor.modules()) if model.predictor is not None else [])
    return [m.register_forward_pre_hook(pre) for m in mods if isinstance(m, nn.ReLU)]


def normalized_error(got, ref):
    if not got.is_floating_point():
        return 0.0 if torch.equal(got, ref) else float("inf")
    scale = ref.double().abs().max().item()
    return (got.double() - ref.double()).abs().max().item() / (scale if scale > 0 else 1.0)


def exact_run(case):
    """float64 run from the float32 initialization: the exact states S0..SK and ReLU margins."""
    model32 = make_model(case, torch.float32)
    init = snapshot(model32, {n: torch.zeros_like(p) for n, p in model32.online_params()})
    model = make_model(case, torch.float64)
    momenta = restore(model, init)
    v1, v2 = (v.double() for v in make_views(case))
    record = [1.0]
    hooks = relu_margin_hooks(model, record)
    states, losses, margins = [init], [], []
    for lr, tau in zip(case["lr"], case["tau"]):
        record[0] = 1.0
        losses.append(byol_step(model, v1, v2, lr, tau, momenta, case["config"]["optimizer"]).item())
        margins.append(record[0])
        states.append(snapshot(model, momenta))
    for h in hooks:
        h.remove()
    return states, losses, margins, eval_outputs(model, v1)


def eval_outputs(model, images):
    """Eval-mode (running statistics) outputs for Byol.embed / project: y, z and the target's z."""
    model.eval()
    with torch.no_grad():
        y = model.online.encoder(images)
        out = {"eval/y": y, "eval/z": model.online.projector(y), "eval/z_target": model.target(images)}
    model.train()
    return out


def fp32_floors(case, states):
    """PyTorch float32 against the exact states: teacher-forced (one step from the exact
    state k-1, what the tests do) and chained (K steps from S0)."""
    opt = case["config"]["optimizer"]
    v1, v2 = make_views(case)
    forced, chained, losses32 = {}, {}, []
    chain = make_model(case, torch.float32)
    chain_momenta = restore(chain, states[0])
    for k, (lr, tau) in enumerate(zip(case["lr"], case["tau"]), start=1):
        model = make_model(case, torch.float32)
        momenta = restore(model, {n: (t.float() if t.is_floating_point() else t) for n, t in states[k - 1].items()})
        byol_step(model, v1, v2, lr, tau, momenta, opt)
        got = snapshot(model, momenta)
        losses32.append(byol_step(chain, v1, v2, lr, tau, chain_momenta, opt).item())
        got_chain = snapshot(chain, chain_momenta)
        for name, ref in states[k].items():
            if name == "optimizer.momentum":
                for pname, sl in momentum_slices(model):
                    forced[f"{k}/{name}[{pname}]"] = slice_error(got[name], ref, sl)
                    chained[f"{k}/{name}[{pname}]"] = slice_error(got_chain[name], ref, sl)
                continue
            forced[f"{k}/{name}"] = normalized_error(got[name], ref)
            chained[f"{k}/{name}"] = normalized_error(got_chain[name], ref)
    return forced, chained, losses32


def momentum_slices(model):
    """(parameter name without the network prefix, slice) of the flat momentum, as ByolModel
    names them (encoder.*, projector.*, predictor.*)."""
    out, at = [], 0
    for n, p in model.online_params():
        out.append((n[len("online."):] if n.startswith("online.") else n, slice(at, at + p.numel())))
        at += p.numel()
    return out


def slice_error(got, ref, sl):
    """Normalized error of one parameter's momentum. A parameter whose exact gradient is 0
    (the bias of a Linear followed by BatchNorm) is measured against 1e-3 of the whole
    buffer's scale: its float32 value is rounding noise (native/tests/test_step.cc does the same)."""
    scale = max(ref[sl].double().abs().max().item(), 1e-3 * ref.double().abs().max().item())
    return (got[sl].double() - ref[sl].double()).abs().max().item() / scale


def search(name):
    torch.set_num_threads(1)
    for seed in range(1, 13):
        case = dict(CASES[name], seed=seed)
        states, losses, margins, _ = exact_run(case)
        forced, chained, _ = fp32_floors(case, states)
        skip = lambda key: key.endswith(("net.0.bias", "num_batches_tracked"))
        worst_forced = max(v for k, v in forced.items() if not skip(k))
        worst_chained = max(v for k, v in chained.items() if not skip(k))
        print(f"seed {seed:2d}: min ReLU margin {min(margins):.1e}, worst fp32 error forced {worst_forced:.1e}, "
              f"chained {worst_chained:.1e}")


def kind_of(name):
    """Groups tensors for reporting and tolerances: momentum, running (BN statistics),
    online / target / predictor parameters. Pre-BN biases (net.0.bias: their exact gradient is
    0, so fp32 noise has no scale to be relative to) and counters are left out (None)."""
    if name.endswith(("net.0.bias", "num_batches_tracked")):
        return None
    if name == "optimizer.momentum":
        return None  # reported per parameter as optimizer.momentum[<name>]
    if name.startswith("eval/"):
        return "eval"
    if name.startswith("optimizer."):
        return "momentum"
    if ".running_" in name:
        return "running"
    return name.split(".")[0]


def worst_by_kind(floors):
    """{"<k>/<kind>": [worst normalized error, tensor]} over a floor map."""
    worst = {}
    for key, err in floors.items():
        k, rest = key.split("/", 1)
        kind = kind_of(rest)
        if kind is None:
            continue
        slot = f"{k}/{kind}"
        if err > worst.get(slot, [0.0, ""])[0]:
            worst[slot] = [err, rest]
    return worst


def generate(out_dir, report):
    from safetensors.torch import save_file

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    total = 0
    for name, case in CASES.items():
        states, losses, margins, evals = exact_run(case)
        forced, chained, losses32 = fp32_floors(case, states)
        v1, v2 = make_views(case)
        tensors = {"view1": v1.contiguous(), "view2": v2.contiguous()}
        tensors.update({k: v.to(torch.float32).contiguous() for k, v in evals.items()})
        # PyTorch float32 for the same eval outputs, from the exact final state.
        final = make_model(case, torch.float32)
        restore(final, {n: (t.float() if t.is_floating_point() else t) for n, t in states[-1].items()})
        evals32 = eval_outputs(final, v1)
        forced.update({f"{len(states) - 1}/{k}": normalized_error(evals32[k], evals[k]) for k in evals})
        for k in range(1, len(states)):
            tensors[f"step{k}/loss"] = torch.tensor(losses[k - 1], dtype=torch.float32)
            for key, ref in states[k].items():
                tensors[f"step{k}/{key}"] = (ref.to(torch.float32) if ref.is_floating_point() else ref).contiguous()
        meta = dict(format=FORMAT, case=name, config=case["config"], batch=case["batch"], size=case["size"],
                    seed=case["seed"], lr=case["lr"], tau=case["tau"], torch=torch.__version__,
                    loss=losses, loss_fp32_chain=losses32, relu_margin=margins,
                    floor_forced=worst_by_kind(forced), floor_chained=worst_by_kind(chained))
        os.makedirs(out_dir, exist_ok=True)
        init_path = os.path.join(out_dir, f"step_{name}_init.safetensors")
        ref_path = os.path.join(out_dir, f"step_{name}_ref.safetensors")
        init = {k: v.contiguous() for k, v in states[0].items() if k != "optimizer.momentum"}
        save_file(init, init_path, metadata={"byol.format": "byol.weights.v1",
                                             "byol.config": json.dumps(case["config"], sort_keys=True)})
        save_file(tensors, ref_path, metadata={"byol.step_fixture": json.dumps(meta, sort_keys=True)})
        for path in (init_path, ref_path):
            os.chmod(path, 0o644)  # save_file writes 0600
        size = os.path.getsize(init_path) + os.path.getsize(ref_path)
        total += size
        print(f"{name}: wrote {os.path.relpath(init_path, ROOT)} + {os.path.basename(ref_path)} "
              f"({size / 1e6:.2f} MB); losses {[round(x, 6) for x in losses]}; "
              f"min ReLU margin per step {['%.1e' % m for m in margins]}")
        if report:
            for label, floors in (("teacher-forced", meta["floor_forced"]), ("chained", meta["floor_chained"])):
                print(f"  PyTorch float32 vs exact, {label}: worst normalized error per step and kind")
                for slot, (err, rest) in sorted(floors.items()):
                    print(f"    step {slot:14s} {err:.2e}  {rest}")
    print(f"total {total / 1e6:.2f} MB")


# ---------------------------------------------------------------------------------------
# Encoder interchange check.

def check_encoder(path, arch, stem, width, in_channels, images):
    from safetensors.torch import load_file

    try:
        import torchvision  # noqa: F401
        have_tv = True
    except ImportError:
        have_tv = False
    state = load_file(path)
    if have_tv and width == 1.0:
        import torchvision.models as tvm
        model = getattr(tvm, arch)()
        if stem == "cifar":
            model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        model.fc = nn.Identity()
        which = "torchvision.models." + arch
    else:
        model = ResNet(arch, stem, in_channels, width)
        which = "plain-torch ResNet with torchvision's module names"
    model.load_state_dict(state, strict=True)
    print(f"{path}: {len(state)} tensors loaded strictly into {which}")
    if images:
        x = load_file(images)["images"]
        model.eval()
        with torch.no_grad():
            y = model(x)
        print(json.dumps({"y": y.flatten().tolist(), "shape": list(y.shape)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=FIXTURES)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--check-encoder")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--images", help="safetensors with 'images' (N,C,H,W): print the eval-mode y as JSON")
    ap.add_argument("--search", metavar="CASE", help="print ReLU margins and fp32 floors for seeds 1..12 of CASE")
    a = ap.parse_args()
    if a.check_encoder:
        check_encoder(a.check_encoder, a.arch, a.stem, a.width, a.in_channels, a.images)
        return
    if a.search:
        search(a.search)
        return
    generate(a.out, a.report)


if __name__ == "__main__":
    sys.exit(main())
