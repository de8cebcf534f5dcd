#!/usr/bin/env python3
"""test_gpu_report.py: checks bench/gpu_report.py on made-up result lines built here (test input,
never results): ratios, target verdicts, error rows, memory line, bad input and the BENCHMARKS.md
section replacement. Needs no GPU and no PyTorch.

    python3 bench/test_gpu_report.py
"""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gpu_report  # noqa: E402

R50 = dict(arch="resnet50", stem="imagenet", size=224, batch=128, width=1, channels=3, hidden=4096, out=256,
           pred_hidden=4096, optimizer="lars")
R18 = dict(R50, arch="resnet18", stem="cifar", size=32, batch=512)


def result(config, engine, variant, steps_per_s, **extra):
    r = dict(config, engine=engine, variant=variant, steps=10, seconds=10 / steps_per_s, steps_per_s=steps_per_s,
             images_per_s=steps_per_s * config["batch"], ms_per_step_median=1000 / steps_per_s, loss=3.9,
             device_used_mb=1000.0 if engine == "byol" else 2000.0)
    if engine == "pytorch":
        r.update(torch="2.5.1+cu124", torch_cuda="12.4", cudnn=90100, peak_allocated_mb=1500.0)
    else:
        r.update(tensor_mb=800.0, backend="cuda:0: Test GPU (sm_90), driver CUDA 12.8, runtime 13.0, cuDNN 9.10.0, "
                                          "TF32 conv on / matmul on")
    r.update(extra)
    return r


def read_text(path):
    with open(path) as f:
        return f.read()


def write_lines(folder, records):
    path = os.path.join(folder, "results.jsonl")
    with open(path, "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def render(self, records):
        machine, results = gpu_report.read_lines(write_lines(self.dir.name, records))
        return gpu_report.render(machine, results, "bench/gpu.sh")

    def test_ratios_verdicts_and_memory(self):
        md = self.render([
            dict(engine="machine", gpu="Test GPU 80GB", driver="570.1", driver_cuda="12.8", nvcc="13.0.88",
                 gpu_memory="81559 MiB", compute_cap="9.0", date="2030-01-01 00:00 UTC"),
            result(R50, "byol", "tf32", 2.4),  # 1.2x PyTorch TF32: met
            result(R50, "pytorch", "fp32", 1.0),
            result(R50, "pytorch", "tf32", 2.0),
            result(R50, "pytorch", "bf16", 4.0),
            result(R18, "byol", "tf32", 12.0),  # 1.2x PyTorch TF32: below the 1.5x target
            result(R18, "pytorch", "tf32", 10.0),
        ])
        self.assertIn("GPU: **Test GPU 80GB** (81559 MiB, compute capability 9.0); driver 570.1 (CUDA 12.8); "
                      "nvcc 13.0.88; PyTorch 2.5.1+cu124 (CUDA 12.4, cuDNN 9.1.0)", md)
        self.assertIn("byol backend: cuda:0: Test GPU (sm_90), driver CUDA 12.8, runtime 13.0, cuDNN 9.10.0.", md)
        self.assertIn("### ResNet-50, imagenet stem, 224x224x3, batch 128, projector 4096/256, predictor 4096, LARS", md)
        byol_r50 = next(l for l in md.splitlines() if l.startswith("| byol ") and "307" in l)
        cells = [c.strip() for c in byol_r50.strip("|").split("|")]
        self.assertEqual(cells[:8], ["byol", "TF32", "2.40", "307", "416.7", "2.40x", "1.20x", "0.60x"])
        self.assertEqual(cells[8:10], ["800*", "1,000"])
        self.assertIn("Target (byol >= 1.00x PyTorch TF32 steps/s): **met**: 1.20x (byol tf32 307 images/s, "
                      "PyTorch TF32 256 images/s).", md)
        self.assertIn("Target (byol >= 1.50x PyTorch TF32 steps/s): **not met**: 1.20x", md)
        self.assertIn("Device memory in use after the timed steps (tf32: byol 1,000 MiB vs PyTorch 2,000 MiB).", md)
        self.assertTrue(md.startswith(gpu_report.BEGIN) and md.rstrip().endswith(gpu_report.END))

    def test_error_rows_and_missing_baseline(self):
        md = self.render([
            dict(R50, engine="byol", variant="tf32", error="cuda: lars_update not implemented", phase="warm-up",
                 not_supported=True),
            dict(R50, engine="pytorch", variant="tf32", error="OutOfMemoryError: CUDA out of memory", not_supported=False),
            result(R50, "pytorch", "bf16", 4.0),
        ])
        self.assertIn("not supported (warm-up): cuda: lars_update not implemented", md)
        self.assertIn("error: OutOfMemoryError: CUDA out of memory", md)
        self.assertIn("Target (byol >= 1.00x PyTorch TF32 steps/s): not measured, no PyTorch TF32 result.", md)
        table = [l for l in md.splitlines() if l.startswith("| ")]
        self.assertEqual(len(table), 2 + 3)  # header, rule, three rows

    def test_non_finite_loss_is_noted(self):
        md = self.render([result(R18, "byol", "fp32", 5.0, loss=float("nan")), result(R18, "pytorch", "tf32", 5.0)])
        self.assertIn("loss not finite", md)

    def test_graph_rows(self):
        # byol rows say whether the step replayed as a CUDA graph; the eager rerun is its own row,
        # the memory line keeps the graph run, and a failed capture is labelled and explained.
        md = self.render([
            result(R18, "pytorch", "tf32", 10.0),
            result(R18, "byol", "tf32", 20.0, graphs=True, graph_launches=13, device_used_mb=900.0),
            result(R18, "byol", "tf32", 14.0, graphs=False, graph_launches=0, device_used_mb=700.0),
            result(R50, "pytorch", "tf32", 2.0),
            result(R50, "byol", "tf32", 2.2, graphs=True, graph_launches=0, graph_error="cuda: capture refused"),
        ])
        self.assertRegex(md, r"\| byol +\| TF32, CUDA graph +\| 20.00 ")
        self.assertRegex(md, r"\| byol +\| TF32, eager +\| 14.00 ")
        self.assertIn("TF32, eager (capture failed)", md)
        self.assertIn("graph capture failed: cuda: capture refused", md)
        self.assertIn("**met**: 2.00x (byol tf32", md)  # the best byol row is compared
        self.assertIn("tf32: byol 900 MiB", md)

    def test_op_times_table(self):
        # A byol run with --op-times: a summary by kind and the longest (phase, op) rows, the rest
        # folded into one row; runs without the field add nothing.
        rows = [dict(phase="backward", op="conv2d_backward_weight", calls=40, ms=30.0, flops=6e12, bytes=1e9),
                dict(phase="online forward", op="conv2d_forward", calls=40, ms=20.0),
                dict(phase="backward", op="batchnorm_backward", calls=44, ms=25.0, flops=0, bytes=5e10),
                dict(phase="optimizer", op="lars_update", calls=1, ms=5.0)]
        rows += [dict(phase="backward", op=f"add{i}", calls=1, ms=2.0) for i in range(10)]
        md = self.render([
            result(R18, "pytorch", "tf32", 10.0),
            result(R18, "byol", "tf32", 20.0, op_times=dict(steps=3, ms_per_step=101.0, op_ms_per_step=100.0,
                                                              rows=rows)),
            result(R18, "byol", "fp32", 8.0),
        ])
        self.assertIn("Where byol's TF32 step goes: 3 more steps run eagerly with op timing (101.0 ms/step wall, "
                      "100.0 ms/step in ops, device time): convolutions 50%, batch norm 25%, elementwise 20%, "
                      "optimizer 5%.", md)
        self.assertRegex(md, r"\| backward +\| conv2d_backward_weight +\| 40 +\| 30.00 +\| 30.0% +\| 200,000.0 GFLOP/s +\|")
        self.assertRegex(md, r"\| backward +\| batchnorm_backward +\| 44 +\| 25.00 +\| 25.0% +\| 2,000.0 GB/s +\|")
        self.assertRegex(md, r"\| online forward +\| conv2d_forward +\| 40 +\| 20.00 +\| 20.0% +\| - +\|")
        self.assertRegex(md, r"\| +\| 4 more +\| - +\| 8.00 +\| 8.0% +\| - +\|")
        self.assertEqual(md.count("Where byol's"), 1)

    def test_pytorch_op_times_table(self):
        # PyTorch's profile: aten ops without phases, grouped by kind; no phase column.
        rows = [dict(phase="", op="aten::cudnn_convolution", calls=80, ms=40.0),
                dict(phase="", op="aten::convolution_backward", calls=40, ms=30.0),
                dict(phase="", op="aten::native_batch_norm_backward", calls=44, ms=20.0),
                dict(phase="", op="aten::_foreach_add_", calls=3, ms=10.0)]
        md = self.render([result(R18, "pytorch", "tf32", 10.0, op_times=dict(steps=3, ms_per_step=105.0, rows=rows)),
                          result(R18, "byol", "tf32", 20.0)])
        self.assertIn("Where PyTorch's TF32 step goes: 3 more steps under torch.profiler (105.0 ms/step wall, "
                      "100.0 ms/step in ops, self device time of each aten op): convolutions 70%, batch norm 20%, "
                      "optimizer and EMA 10%.", md)
        self.assertRegex(md, r"\| op +\| calls/step +\| ms/step +\| share +\| rate +\|")
        self.assertRegex(md, r"\| aten::cudnn_convolution +\| 80 +\| 40.00 +\| 40.0% +\| - +\|")

    def test_bad_input_names_the_line(self):
        path = write_lines(self.dir.name, [result(R18, "pytorch", "tf32", 5.0), "{not json"])
        with self.assertRaisesRegex(gpu_report.ReportError, r"results\.jsonl:2: expected one JSON object per line"):
            gpu_report.read_lines(path)
        path = write_lines(self.dir.name, [dict(engine="byol", variant="tf32", arch="resnet18")])
        with self.assertRaisesRegex(gpu_report.ReportError, r":1: result line lacks stem, size, batch"):
            gpu_report.read_lines(path)
        path = write_lines(self.dir.name, [dict(engine="machine", gpu="x")])
        with self.assertRaisesRegex(gpu_report.ReportError, "no result lines"):
            gpu_report.read_lines(path)
        self.assertEqual(gpu_report.main([path]), 1)

    def test_write_replaces_the_section(self):
        bench = os.path.join(self.dir.name, "BENCHMARKS.md")
        with open(bench, "w") as f:
            f.write(f"# Benchmarks\n\nbefore\n\n{gpu_report.BEGIN}\nold numbers\n{gpu_report.END}\n\nafter\n")
        gpu_report.write_section(bench, "new section\n")
        self.assertEqual(read_text(bench), "# Benchmarks\n\nbefore\n\nnew section\n\nafter\n")
        other = os.path.join(self.dir.name, "OTHER.md")
        with open(other, "w") as f:
            f.write("# Benchmarks\n\nCPU only.\n")
        gpu_report.write_section(other, "new section\n")
        self.assertEqual(read_text(other), "# Benchmarks\n\nCPU only.\n\nnew section\n")


if __name__ == "__main__":
    unittest.main()
