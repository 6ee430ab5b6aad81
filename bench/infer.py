"""Inference speed: the compiled engine (`dkd`, fp32 and bf16) against OpenCV DNN 4.x and
PyTorch eager on the same seeded random weights; one run, one table (Markdown, JSON with --json).

Latency at batch 1 (median ms per image) and throughput at batch 8 (images/s), 416x416, for
yolov4-tiny and yolov4.  dkd is timed by its own `dkd bench` (C++, the forward pass incl.
the decode of all rows, no image IO); OpenCV DNN (readNetFromDarknet, OPENCV backend, CPU) and
PyTorch (darknet_kd.model, eval, no_grad) in this process.  All use --threads threads.  The
`dkd fp32 direct` row is the engine with its Winograd convolutions off (DKD_WINOGRAD=0: every
convolution through oneDNN's direct kernels).  With a GPU and a libdkd built with the
engine's CUDA path, a `dkd cuda fp32` row is added.  Goals (issue #7): dkd fp32 >= 1.5x
OpenCV DNN, dkd bf16 >= 4x.

    .venv/bin/python bench/infer.py [--threads 2] [--size 416] [--cfgs yolov4-tiny,yolov4]
                                    [--runs 10] [--rounds 3] [--json docs/bench_infer.json]

The engines take turns (--rounds rounds of --runs timed runs each; a row is the median of
its rounds' medians), so that a load that comes and goes on a shared machine falls on all of
them alike.  `--stat min` takes the fastest run instead (timeit's rule: on a loaded machine
the fastest run is the one least disturbed).  The load average is printed with the table: only ratios taken in the same run
mean anything there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darknet_kd.engine import Net, cpu_has_bf16  # noqa: E402
from darknet_kd.fileio import atomic_write  # noqa: E402
from darknet_kd.model import Darknet  # noqa: E402
from darknet_kd.cfg import sized_cfg  # noqa: E402
from darknet_kd.model.weights import randomize  # noqa: E402


def dkd_binary() -> str:
    if os.environ.get("DKD_BINARY"):  # another build of dkd
        return os.environ["DKD_BINARY"]
    for p in (ROOT / ".venv" / "bin" / "dkd", ROOT / "build" / "cmake" / "python" / "lib" / "dkd"):
        if p.exists():
            return str(p)
    sys.exit("bench/infer.py: the dkd binary is not built (make setup)")


STAT = "median"  # or "min" (--stat)


def pick(ts: list[float]) -> float:
    return min(ts) if STAT == "min" else statistics.median(ts)


def timed(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return pick(ts) * 1e3


def bench_dkd(cfg, weights, size, batch, runs, threads, bf16, tmp, device="cpu", env=None) -> tuple[float, str]:
    out = Path(tmp) / "dkd.json"
    cmd = [dkd_binary(), "bench", str(cfg), str(weights), "--batch", str(batch), "--runs", str(runs), "--warmup", "1",
           "--threads", str(threads), "--width", str(size), "--height", str(size), "--json", str(out)]
    if bf16:
        cmd.append("--bf16")
    cmd += ["--device", device]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    r = json.loads(out.read_text())
    return (r["min_ms"] if STAT == "min" else r["median_ms"]), r["precision"]


def cpu_peak(threads: int, tmp) -> tuple[float, float]:
    """(fp32, bf16) GFLOP/s peak of `threads` cores: bench/cpu_peak.cpp's best single-core
    rate times the cores used; (0, 0) where it cannot be built or the CPU lacks AVX-512."""
    exe = Path(tmp) / "cpu_peak"
    try:
        subprocess.run(["g++", "-O2", str(ROOT / "bench" / "cpu_peak.cpp"), "-o", str(exe)], check=True,
                       capture_output=True)
        fp32, bf16 = map(float, subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return 0.0, 0.0
    cores = min(threads, os.cpu_count() or 1)
    return fp32 * cores, bf16 * cores


def cuda_engine() -> bool:
    """True when libdkd has the engine's CUDA path and a CUDA device is there."""
    from darknet_kd.errors import DarknetKDError

    try:
        Net(ROOT / "cfg" / "yolov4-tiny.cfg", device="cuda", width=32, height=32).close()
        return True
    except DarknetKDError:
        return False


def bench_opencv(cfg, weights, x, runs, threads) -> float:
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = net.getUnconnectedOutLayersNames()

    def run():
        net.setInput(x)
        net.forward(names)
    return timed(run, runs)


def bench_torch(model, x, runs, threads) -> float:
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        return timed(lambda: model(xt), runs)


def markdown(result) -> str:
    lines = [f"`{result['command']}`", "",
             f"{result['cpu']}, {result['threads']} threads, bf16 kernels: {result['bf16_cpu']}; "
             f"{'fastest' if result.get('stat') == 'min' else 'median'} run; "
             f"load average {result['load_before']:.1f} before, {result['load_after']:.1f} after "
             f"(on {os.cpu_count()} cores)", "",
             "| model | engine | batch 1 latency (ms) | vs OpenCV | batch 8 throughput (img/s) | vs OpenCV |",
             "|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['engine']} | {r['b1_ms']:.1f} | {r['b1_speedup']:.2f}x | "
                     f"{r['b8_ips']:.2f} | {r['b8_speedup']:.2f}x |")
    lines.append("")
    for g in result["goals"]:
        lines.append(f"- {g}")
    if result.get("peak_fp32"):
        lines += ["", f"Arithmetic peak of {result['threads']} cores (bench/cpu_peak.cpp): fp32 FMA "
                      f"{result['peak_fp32']:.0f} GFLOP/s, AVX512-BF16 {result['peak_bf16']:.0f} GFLOP/s."]
        for m in result["models"]:
            lines.append(f"- {m['model']}: {m['gflop']:.3f} GFLOP per image; a direct convolution needs at least "
                         f"{m['floor_fp32_ms']:.1f} ms in fp32, {m['floor_bf16_ms']:.1f} ms in bf16 at batch 1; "
                         + ", ".join(f"{e} runs at {g:.0f} GFLOP/s ({100 * f:.0f} % of its peak)"
                                     for e, (g, f) in m["effective"].items()))
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--size", type=int, default=416)
    p.add_argument("--cfgs", default="yolov4-tiny,yolov4")
    p.add_argument("--runs", type=int, default=10, help="timed runs at batch 1 (batch 8: a third, at least 2)")
    p.add_argument("--rounds", type=int, default=3, help="turns each engine takes (median of the rounds)")
    p.add_argument("--stat", choices=("median", "min"), default="median", help="per engine: median or fastest run")
    p.add_argument("--json", help="also write the result as JSON here (and the table beside it as .md)")
    args = p.parse_args(argv)
    global STAT
    STAT = args.stat
    command = "python bench/infer.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"$ {command}", flush=True)
    load_before = os.getloadavg()[0]
    cuda = cuda_engine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cfgs.split(","):
            cfg = sized_cfg(ROOT / "cfg" / f"{name}.cfg", args.size, Path(tmp))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = Darknet.from_cfg(cfg).eval()
            randomize(model, 0)
            weights = Path(tmp) / f"{name}.weights"
            model.save_weights(weights)
            res = {}
            for batch, runs in ((1, args.runs), (8, max(2, args.runs // 3))):
                x = np.random.RandomState(0).rand(batch, 3, args.size, args.size).astype(np.float32)
                engines = {"OpenCV DNN " + cv2.__version__: lambda: bench_opencv(cfg, weights, x, runs, args.threads),
                           "PyTorch eager " + torch.__version__.split("+")[0]:
                               lambda: bench_torch(model, x, runs, args.threads)}
                bf16_label = "dkd bf16" if cpu_has_bf16() else "dkd fp32 (bf16 asked)"  # the engine's fallback
                for label, bf16, env in (("dkd fp32 direct", False, {"DKD_WINOGRAD": "0"}), ("dkd fp32", False, None),
                                         (bf16_label, True, None)):
                    engines[label] = (lambda bf16=bf16, env=env:
                                      bench_dkd(cfg, weights, args.size, batch, runs, args.threads, bf16, tmp, env=env)[0])
                if cuda:  # the engine's CUDA path (cuBLAS), when built with it and a GPU is there
                    engines["dkd cuda fp32"] = lambda: bench_dkd(cfg, weights, args.size, batch, runs, args.threads,
                                                                 False, tmp, "cuda")[0]
                times = {k: [] for k in engines}
                for _ in tqdm(range(args.rounds), desc=f"{name} batch {batch}", leave=False):
                    for k, fn in engines.items():
                        times[k].append(fn())
                for k, v in times.items():
                    res[(k, batch)] = pick(v)
                print(f"{name} batch {batch}: " + ", ".join(f"{k[0]} {v:.1f} ms" for k, v in res.items() if k[1] == batch),
                      flush=True)
            engines = list(dict.fromkeys(k[0] for k in res))
            ocv = next(e for e in engines if e.startswith("OpenCV"))
            for e in engines:
                b1, b8 = res[(e, 1)], res[(e, 8)]
                rows.append({"model": f"{name} {args.size}", "engine": e, "b1_ms": b1, "b1_speedup": res[(ocv, 1)] / b1,
                             "b8_ips": 8000.0 / b8, "b8_speedup": res[(ocv, 8)] / b8})
    goals, models = [], []
    with tempfile.TemporaryDirectory() as tmp:
        peak_fp32, peak_bf16 = cpu_peak(args.threads, tmp)
    for name in args.cfgs.split(",") if peak_fp32 else []:
        with tempfile.TemporaryDirectory() as tmp:
            table = Net(sized_cfg(ROOT / "cfg" / f"{name}.cfg", args.size, Path(tmp))).layer_table()
        gflop = float(table.rsplit("Total BFLOPS", 1)[1])
        eff = {}
        for r in rows:
            if r["model"] == f"{name} {args.size}" and r["engine"] in ("dkd fp32 direct", "dkd fp32", "dkd bf16"):
                g = gflop / r["b1_ms"] * 1e3
                eff[r["engine"]] = (g, g / (peak_bf16 if r["engine"] == "dkd bf16" else peak_fp32))
        models.append({"model": f"{name} {args.size}", "gflop": gflop, "floor_fp32_ms": gflop / peak_fp32 * 1e3,
                       "floor_bf16_ms": gflop / peak_bf16 * 1e3 if peak_bf16 else float("nan"), "effective": eff})
    for r in rows:
        if r["engine"] == "dkd fp32":
            goals.append(f"{r['model']}: dkd fp32 vs OpenCV DNN {r['b1_speedup']:.2f}x (batch 1), "
                         f"{r['b8_speedup']:.2f}x (batch 8); goal 1.5x")
        if r["engine"] == "dkd bf16":
            goals.append(f"{r['model']}: dkd bf16 vs OpenCV DNN {r['b1_speedup']:.2f}x (batch 1), "
                         f"{r['b8_speedup']:.2f}x (batch 8); goal 4x")
    result = {"command": command.strip(), "stat": args.stat, "cpu": platform.processor() or platform.machine(),
              "threads": args.threads,
              "bf16_cpu": cpu_has_bf16(), "load_before": load_before, "load_after": os.getloadavg()[0],
              "rows": rows, "goals": goals, "peak_fp32": peak_fp32, "peak_bf16": peak_bf16, "models": models}
    md = markdown(result)
    print(md)
    if args.json:
        atomic_write(args.json, json.dumps(result, indent=1) + "\n")
        atomic_write(Path(args.json).with_suffix(".md"), md)


if __name__ == "__main__":
    main()
