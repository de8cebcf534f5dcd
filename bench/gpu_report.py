#!/usr/bin/env python3
"""gpu_report.py: turns the JSON lines of bench/gpu.sh (byol_bench_step, torch_gpu_step.py and one
machine line) into the markdown of BENCHMARKS.md's "BYOL step, GPU" section; also writes that
machine line. Contract: a result line has engine, variant and the config fields (arch, stem,
size, batch, width, channels, hidden, out, pred_hidden), then either steps_per_s... or error.

    python3 bench/gpu_report.py --machine                  # prints the machine JSON line
    python3 bench/gpu_report.py RESULTS.jsonl [--out FILE] [--write BENCHMARKS.md] [--command TEXT]

Exit 1 when the input has no result line or a line is not JSON (naming file:line), 2 on bad
arguments. Targets (the GPU issue): ResNet-50 imagenet stem at least PyTorch TF32 steps/s,
ResNet-18 cifar stem at least 1.5x PyTorch TF32; byol's best variant is compared.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys

CONFIG_KEYS = ("arch", "stem", "size", "batch", "width", "channels", "hidden", "out", "pred_hidden")
VARIANT_ORDER = {"fp32": 0, "tf32": 1, "bf16": 2}
VARIANT_LABEL = {"fp32": "fp32 (TF32 off)", "tf32": "TF32", "bf16": "bf16 autocast",
                 "tf32-eager": "TF32, eager"}
# (arch, stem) -> byol steps/s over PyTorch TF32 steps/s that the issue asks for.
TARGETS = {("resnet50", "imagenet"): 1.0, ("resnet18", "cifar"): 1.5}
BEGIN = "<!-- bench/gpu.sh: begin -->"
END = "<!-- bench/gpu.sh: end -->"


class ReportError(Exception):
    pass


# ---------------------------------------------------------------------------------------
# The machine line.

def run_text(cmd):
    """stdout of cmd, or None when it is missing or fails."""
    if shutil.which(cmd[0]) is None and not os.path.isfile(cmd[0]):
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def machine_line(nvcc):
    out = dict(engine="machine", date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    smi = run_text(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                    "--format=csv,noheader"])
    if smi and smi.strip():
        fields = [f.strip() for f in smi.strip().splitlines()[0].split(",")]
        if len(fields) == 4:
            out.update(gpu=fields[0], driver=fields[1], gpu_memory=fields[2], compute_cap=fields[3])
    header = run_text(["nvidia-smi"])
    m = re.search(r"CUDA Version:\s*([0-9.]+)", header or "")
    if m:
        out["driver_cuda"] = m.group(1)
    text = run_text([nvcc or "nvcc", "--version"])
    m = re.search(r"release ([0-9.]+), V([0-9.]+)", text or "")
    if m:
        out["nvcc"] = m.group(2)
    try:
        import torch
        out.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                   torch_cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        out["torch_error"] = f"{type(e).__name__}: {e}"
    cpu = run_text(["lscpu"])
    m = re.search(r"Model name:\s*(.+)", cpu or "")
    if m:
        out["cpu"] = f"{m.group(1).strip()}, {os.cpu_count()} threads"
    return out


# ---------------------------------------------------------------------------------------
# Reading and tabulating.

def read_lines(path):
    machine, results = {}, []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ReportError(f"{path}:{number}: expected one JSON object per line: {e.msg} in {line[:80]!r}")
            if not isinstance(record, dict):
                raise ReportError(f"{path}:{number}: expected a JSON object but found {type(record).__name__}")
            if record.get("engine") == "machine":
                machine.update(record)
                continue
            if "check" in record:  # torch_gpu_step --smoke's self-check line
                continue
            missing = [k for k in ("engine", "variant", *CONFIG_KEYS) if k not in record]
            if missing:
                raise ReportError(f"{path}:{number}: result line lacks {', '.join(missing)}")
            if "error" not in record and not isinstance(record.get("steps_per_s"), (int, float)):
                raise ReportError(f"{path}:{number}: expected steps_per_s (a number) or error")
            results.append(record)
    if not results:
        raise ReportError(f"{path}: no result lines (engine byol or pytorch)")
    return machine, results


def cudnn_version(v):
    """torch.backends.cudnn.version()'s integer (90100) as 9.1.0; other values unchanged."""
    if isinstance(v, int) and v >= 10000:
        return f"{v // 10000}.{v % 10000 // 100}.{v % 100}"
    return v


def config_key(r):
    return tuple(r[k] for k in CONFIG_KEYS)


def config_title(r):
    heads = f"projector {r['hidden']}/{r['out']}, predictor {r['pred_hidden']}"
    width = "" if float(r["width"]) == 1.0 else f" x{r['width']:g}"
    arch = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50"}.get(r["arch"], r["arch"])
    return (f"{arch}{width}, {r['stem']} stem, {r['size']}x{r['size']}x{r['channels']}, batch {r['batch']}, "
            f"{heads}, {r.get('optimizer', 'lars').upper()}")


def fmt(v, digits=1):
    return "-" if not isinstance(v, (int, float)) else f"{v:,.{digits}f}"


def one_line(text, limit=160):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def markdown_table(rows):
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    out = ["| " + " | ".join(v.ljust(widths[c]) for c, v in enumerate(r)) + " |" for r in rows]
    out.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return out


# Op -> what it is, for the "where the step goes" summary (byol_bench_step --op-times).
OP_KINDS = (("conv2d_", "convolutions"), ("batchnorm_", "batch norm"), ("linear_", "linear layers"),
            ("relu_", "elementwise"), ("add", "elementwise"), ("accumulate", "elementwise"),
            ("maxpool", "pooling"), ("avgpool", "pooling"), ("byol_loss", "loss"), ("lars_", "optimizer"),
            ("sgd_", "optimizer"), ("adamw_", "optimizer"), ("ema_", "EMA"), ("augment", "augmentation"),
            ("upload", "copies"), ("download", "copies"), ("copy", "copies"), ("fill", "copies"))
OP_TIMES_SHOWN = 10


# PyTorch's aten ops (torch_gpu_step.py --op-times), by the first word of this list in their name.
ATEN_KINDS = (("foreach", "optimizer and EMA"), ("conv", "convolutions"), ("batch_norm", "batch norm"),
              ("norm", "optimizer and EMA"), ("mm", "linear layers"), ("linear", "linear layers"),
              ("relu", "elementwise"), ("threshold", "elementwise"), ("clamp", "elementwise"),
              ("add", "elementwise"), ("mul", "elementwise"), ("copy", "copies"))


def op_kind(op, engine="byol"):
    if engine != "byol":  # PyTorch's profiler keys: aten ops, and autograd nodes and the like ("other")
        return next((kind for word, kind in ATEN_KINDS if op.startswith("aten::") and word in op), "other")
    return next((kind for prefix, kind in OP_KINDS if op.startswith(prefix)), op)


def op_rate(x):
    """Nominal work over time: GFLOP/s for convolutions and linear layers, GB/s for the
    memory-bound ops (to hold against the card's peak), '-' when the op gives none."""
    ms, flops, bytes_ = x.get("ms") or 0, x.get("flops") or 0, x.get("bytes") or 0
    if ms <= 0 or (flops <= 0 and bytes_ <= 0):
        return "-"
    return f"{flops / ms / 1e6:,.1f} GFLOP/s" if flops > 0 else f"{bytes_ / ms / 1e6:,.1f} GB/s"


def op_times_lines(r):
    """Where a run's step time goes, from its op_times field: byol's ops by phase (eager steps,
    byol_bench_step --op-times) or PyTorch's aten ops (torch.profiler, torch_gpu_step.py
    --op-times); device time on a GPU."""
    ot = r.get("op_times")
    if not isinstance(ot, dict) or not ot.get("rows"):
        return []
    rows = sorted(ot["rows"], key=lambda x: -x["ms"])
    total = sum(x["ms"] for x in rows)
    if total <= 0:
        return []
    kinds = {}
    for x in rows:
        kind = op_kind(x["op"], r["engine"])
        kinds[kind] = kinds.get(kind, 0.0) + x["ms"]
    summary = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    label = VARIANT_LABEL.get(r["variant"], r["variant"])
    # byol on CUDA times ops between events on the stream; the CPU times each call (a smoke run).
    cuda = str(r.get("device", "cuda")).startswith("cuda")
    wall = f"{fmt(ot.get('ms_per_step'), 1)} ms/step wall, {fmt(total, 1)} ms/step in ops"
    if r["engine"] == "byol":
        clock = "device time" if cuda else "wall time of each op"
        head = f"Where byol's {label} step goes: {ot['steps']} more steps run eagerly with op timing ({wall}, {clock})"
    else:
        clock = "self device time" if cuda else "self CPU time"
        head = (f"Where PyTorch's {label} step goes: {ot['steps']} more steps under torch.profiler ({wall}, "
                f"{clock} of each aten op)")
    lines = ["", f"{head}: {summary}.", ""]
    phases = any(x.get("phase") for x in rows)
    table = [(["phase"] if phases else []) + ["op", "calls/step", "ms/step", "share", "rate"]]
    for x in rows[:OP_TIMES_SHOWN]:
        table.append(([x["phase"]] if phases else []) + [x["op"], fmt(x["calls"], 0), fmt(x["ms"], 2),
                                                         f"{100 * x['ms'] / total:.1f}%", op_rate(x)])
    rest = rows[OP_TIMES_SHOWN:]
    if rest:
        ms = sum(x["ms"] for x in rest)
        table.append(([""] if phases else []) + [f"{len(rest)} more", "-", fmt(ms, 2), f"{100 * ms / total:.1f}%", "-"])
    return lines + markdown_table(table)


def section_for(group):
    """Markdown lines for one config: the table, the target verdict and the memory line."""
    ok = [r for r in group if "error" not in r]
    torch_rate = {r["variant"]: r["steps_per_s"] for r in ok if r["engine"] == "pytorch"}
    rows = [["engine", "variant", "steps/s", "images/s", "ms/step (median)", "vs PyTorch fp32", "vs PyTorch TF32",
             "vs PyTorch bf16", "peak allocated MiB", "device used MiB", "note"]]
    ordered = sorted(group, key=lambda r: (r["engine"] != "byol", VARIANT_ORDER.get(r["variant"], 9)))
    for r in ordered:
        engine = "byol" if r["engine"] == "byol" else f"PyTorch {r.get('torch', '')}".strip()
        label = VARIANT_LABEL.get(r["variant"], r["variant"])
        if r["engine"] == "pytorch" and r["variant"] != "fp32":
            label += ", channels_last"
        if r["engine"] == "byol":
            # Replayed as a CUDA graph unless the run turned it off (--graphs off) or capture failed.
            if r.get("graphs") is False:
                label += ", eager"
            elif r.get("graph_error"):
                label += ", eager (capture failed)"
            elif r.get("graph_launches"):
                label += ", CUDA graph"
        if "error" in r:
            kind = "not supported" if r.get("not_supported") else "error"
            phase = f" ({r['phase']})" if r.get("phase") else ""
            text = one_line(r["error"])
            # gpu.sh's lines for runs the budget left out say so themselves.
            rows.append([engine, label] + ["-"] * 8 + [text if text.startswith("skipped") else f"{kind}{phase}: {text}"])
            continue
        ratios = [fmt(r["steps_per_s"] / torch_rate[v], 2) + "x" if v in torch_rate else "-"
                  for v in ("fp32", "tf32", "bf16")]
        # byol has no allocator statistics yet: its column holds the tensors it allocated
        # (model, optimizer state, activations, views), without op scratch; marked with *.
        if r["engine"] == "byol":
            allocated = fmt(r.get("tensor_mb"), 0) + "*" if r.get("tensor_mb") is not None else "-"
        else:
            allocated = fmt(r.get("peak_allocated_mb"), 0)
        note = f"{r['steps']} steps in {r['seconds']:.1f} s"
        if r.get("graph_error"):
            note += "; graph capture failed: " + one_line(r["graph_error"], 120)
        if not (isinstance(r.get("loss"), (int, float)) and r["loss"] == r["loss"] and abs(r["loss"]) != float("inf")):
            note += "; loss not finite"
        rows.append([engine, label, fmt(r["steps_per_s"], 2), fmt(r["images_per_s"], 0),
                     fmt(r.get("ms_per_step_median"), 1), *ratios, allocated, fmt(r.get("device_used_mb"), 0), note])
    lines = markdown_table(rows)

    first = group[0]
    factor = TARGETS.get((first["arch"], first["stem"]))
    byol_ok = [r for r in ok if r["engine"] == "byol"]
    if factor is not None:
        want = f"byol >= {factor:.2f}x PyTorch TF32 steps/s"
        if "tf32" not in torch_rate:
            lines += ["", f"Target ({want}): not measured, no PyTorch TF32 result."]
        elif not byol_ok:
            lines += ["", f"Target ({want}): not measured, no byol result."]
        else:
            best = max(byol_ok, key=lambda r: r["steps_per_s"])
            ratio = best["steps_per_s"] / torch_rate["tf32"]
            verdict = "**met**" if ratio >= factor else "**not met**"
            lines += ["", f"Target ({want}): {verdict}: {ratio:.2f}x (byol {best['variant']} "
                          f"{best['images_per_s']:,.0f} images/s, PyTorch TF32 "
                          f"{torch_rate['tf32'] * first['batch']:,.0f} images/s)."]
    mem = {(r["engine"], r["variant"]): r for r in ok if r.get("graphs") is not False}
    pairs = [(v, mem.get(("byol", v)), mem.get(("pytorch", v))) for v in ("fp32", "tf32")]
    parts = [f"{v}: byol {fmt(b.get('device_used_mb'), 0)} MiB vs PyTorch {fmt(t.get('device_used_mb'), 0)} MiB"
             for v, b, t in pairs if b and t and (b.get("device_used_mb") is not None or t.get("device_used_mb") is not None)]
    if parts:
        lines += ["", "Device memory in use after the timed steps (" + "; ".join(parts) + ")."]
    for r in ordered:
        if "error" not in r:
            lines += op_times_lines(r)
    return lines


def render(machine, results, command):
    groups = {}
    for r in results:
        groups.setdefault(config_key(r), []).append(r)
    gpu = machine.get("gpu") or next((r.get("gpu") for r in results if r.get("gpu")), "unknown GPU")
    facts = [f"GPU: **{gpu}**" + (f" ({machine['gpu_memory']}, compute capability {machine['compute_cap']})"
                                   if machine.get("gpu_memory") else "")]
    if machine.get("driver"):
        facts.append(f"driver {machine['driver']}" + (f" (CUDA {machine['driver_cuda']})" if machine.get("driver_cuda") else ""))
    if machine.get("nvcc"):
        facts.append(f"nvcc {machine['nvcc']}")
    torch_line = next((r for r in results if r["engine"] == "pytorch" and r.get("torch")), machine)
    if torch_line.get("torch"):
        cudnn = cudnn_version(torch_line.get("cudnn", torch_line.get("torch_cudnn")))
        facts.append(f"PyTorch {torch_line['torch']} (CUDA {torch_line.get('torch_cuda')}, cuDNN {cudnn})")
    if machine.get("cpu"):
        facts.append(f"host {machine['cpu']}")
    backends = sorted({re.sub(r", TF32 conv .*$", "", r["backend"]) for r in results if r.get("backend")})
    lines = [BEGIN, "## BYOL step, GPU", ""]
    if command:
        lines.append(f"`{command}`" + (f" ({machine['date']})." if machine.get("date") else "."))
    lines += ["; ".join(facts) + ".",
              "byol backend: " + ("; ".join(backends) if backends else "not loaded") + ".",
              "",
              "One step = two views of the batch through the online network (forward and backward) and the "
              "target (forward), the symmetric loss, LARS and the EMA; images/s counts batch images (each "
              "gives two views). Synthetic pre-augmented views; each step reads its loss back. PyTorch: "
              "bench/torch_gpu_step.py (ref_byol's modules, foreach LARS/EMA, cuDNN benchmark on); byol: "
              "byol_bench_step (BYOL_CUDNN_BENCHMARK=1, BYOL_CUDA_TF32 per variant). Peak allocated: "
              "PyTorch's max_memory_allocated; byol (*) the tensors it allocated, without op scratch (its "
              "backend has no allocator statistics yet). Device used: total - free memory after the timed "
              "steps (context, libraries and allocator cache included), the same measure for both."]
    for group in groups.values():
        lines += ["", f"### {config_title(group[0])}", ""] + section_for(group)
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(path, section):
    text = "# Benchmarks\n\nEvery number here comes from a script in bench/; each section says the command.\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section.rstrip("\n") + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", help="JSON lines of bench/gpu.sh")
    ap.add_argument("--machine", action="store_true", help="print the machine JSON line and exit")
    ap.add_argument("--nvcc", help="nvcc to ask for its version (--machine; default: nvcc on PATH)")
    ap.add_argument("--out", help="write the markdown here (default: stdout)")
    ap.add_argument("--write", metavar="BENCHMARKS_MD", help="replace (or append) the section in this file")
    ap.add_argument("--command", help="the command line to quote in the section")
    a = ap.parse_args(argv)
    if a.machine:
        print(json.dumps(machine_line(a.nvcc)))
        return 0
    if not a.results:
        ap.error("expected a results file (JSON lines) or --machine")
    try:
        machine, results = read_lines(a.results)
    except (OSError, ReportError) as e:
        print(f"gpu_report: {e}", file=sys.stderr)
        return 1
    section = render(machine, results, a.command)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(section)
    else:
        sys.stdout.write(section)
    if a.write:
        write_section(a.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
