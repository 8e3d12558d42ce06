"""Conv2D speed against the PyTorch CPU yardstick (issue 5).

For eight layer shapes, times Conv2D forward and forward+backward in float32 (warm-up, then the
best and median of ``--repeats`` runs), reports achieved GFLOP/s and that figure as a fraction of
the NumPy float32 matmul peak measured in the same run, and compares with PyTorch 2.13's CPU times
on the same machine class. Also times MaxPool2D forward+backward on mnist-1's output.

    python benchmarks/bench_conv.py [--repeats 15] [--json results.json]

FLOPs: forward ``2*N*C_out*H_out*W_out*C_in*kh*kw``; backward twice that (input and weight
gradients), so forward+backward is three times the forward count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minicnn.nn.layers import Conv2D, MaxPool2D  # noqa: E402

#: name, (N, C_in, C_out, H=W, kernel, stride, pad), PyTorch forward ms, PyTorch forward+backward ms.
#: Where PyTorch's own algorithm choice varied between runs the table gives two values; the
#: comparison uses the faster one (the stricter yardstick).
SHAPES = [
    ("digits-1", (64, 1, 16, 8, 3, 1, 1), (0.06,), (0.35,)),
    ("digits-2", (64, 16, 32, 4, 3, 1, 1), (0.09,), (0.40,)),
    ("mnist-1", (64, 1, 32, 28, 3, 1, 1), (4.0,), (3.6, 10.6)),
    ("mnist-2", (64, 32, 64, 14, 3, 1, 1), (2.0, 2.5), (7.0, 8.0)),
    ("cifar-1", (64, 3, 64, 32, 3, 1, 1), (11.3, 12.2), (11.0, 26.0, 28.0)),
    ("cifar-2", (64, 64, 128, 16, 3, 1, 1), (10.6,), (35.0,)),
    ("stride-2", (64, 32, 64, 28, 3, 2, 1), (3.1,), (11.1, 11.7)),
    ("lenet-5x5", (64, 1, 20, 28, 5, 1, 0), (0.57,), (5.6,)),
]


def blas_info() -> str:
    """The BLAS library NumPy calls, as threadpoolctl reports it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    libs = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads, "
            f"{i.get('architecture')})" for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(libs) or "none found"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(**extra) -> dict:
    """What the numbers were measured on, for the JSON output of every benchmark script."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas_info(), "load_average": load, **extra}


def write_json(path, result: dict) -> None:
    """Write ``result`` to ``path`` (the scripts' ``--json PATH``); nothing when path is None."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)


def timeit(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(best, median) wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def matmul_peak(repeats: int) -> dict[str, float]:
    """NumPy float32 matmul GFLOP/s at 512, 1024 and 2048 (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    result = {}
    for size in (512, 1024, 2048):
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        out = np.empty_like(a)
        best, _ = timeit(lambda a=a, b=b, out=out: np.matmul(a, b, out=out),
                         repeats if size < 2048 else max(3, repeats // 3))
        result[str(size)] = 2 * size ** 3 / best / 1e9
    return result


def bench_shape(spec, repeats: int, rounds: int = 1) -> dict:
    """Times of one shape; with ``rounds`` > 1 the best over that many separate measurements
    (the medians are those of the round with the best time)."""
    if rounds > 1:
        results = [bench_shape(spec, repeats) for _ in range(rounds)]
        fwd = min(results, key=lambda r: r["forward_best_ms"])
        both = min(results, key=lambda r: r["fwd_bwd_best_ms"])
        return {"forward_best_ms": fwd["forward_best_ms"], "forward_median_ms": fwd["forward_median_ms"],
                "fwd_bwd_best_ms": both["fwd_bwd_best_ms"], "fwd_bwd_median_ms": both["fwd_bwd_median_ms"],
                "forward_gflops": fwd["forward_gflops"], "fwd_bwd_gflops": both["fwd_bwd_gflops"]}
    n, c_in, c_out, size, k, stride, pad = spec
    rng = np.random.default_rng(0)
    layer = Conv2D(c_in, c_out, k, stride=stride, padding=pad, rng=0)
    x = rng.standard_normal((n, c_in, size, size), dtype=np.float32)
    out = layer.forward(x)
    grad = rng.standard_normal(out.shape, dtype=np.float32)
    _, _, ho, wo = out.shape
    flops = 2 * n * c_out * ho * wo * c_in * k * k

    def fwd_bwd():
        layer.forward(x)
        layer.backward(grad)

    fwd = timeit(lambda: layer.forward(x), repeats)
    both = timeit(fwd_bwd, repeats)
    return {"forward_best_ms": fwd[0] * 1e3, "forward_median_ms": fwd[1] * 1e3,
            "fwd_bwd_best_ms": both[0] * 1e3, "fwd_bwd_median_ms": both[1] * 1e3,
            "forward_gflops": flops / fwd[0] / 1e9, "fwd_bwd_gflops": 3 * flops / both[0] / 1e9}


def bench_maxpool(repeats: int) -> dict:
    x = np.random.default_rng(0).standard_normal((64, 32, 28, 28), dtype=np.float32)
    pool = MaxPool2D(2)
    grad = np.ones(pool.output_shape(x.shape), dtype=np.float32)

    def fwd_bwd():
        pool.forward(x)
        pool.backward(grad)

    fwd = timeit(lambda: pool.forward(x), repeats)
    both = timeit(fwd_bwd, repeats)
    return {"shape": list(x.shape), "forward_best_ms": fwd[0] * 1e3, "fwd_bwd_best_ms": both[0] * 1e3,
            "fwd_bwd_median_ms": both[1] * 1e3}


def geomean(values) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per measurement (>= 7)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each shape this many separate times and keep the best (for a busy machine)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", nargs="*", help="names of the shapes to run (default: all)")
    args = parser.parse_args(argv)
    repeats = max(7, args.repeats)

    peak = matmul_peak(repeats)
    peak_gflops = max(peak.values())
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"NumPy {np.__version__}; BLAS: {blas_info()}")
    if load:
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("float32 matmul GFLOP/s: " + ", ".join(f"{k}: {v:.0f}" for k, v in peak.items())
          + f"  (peak used: {peak_gflops:.0f})")
    rounds = f", best of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"best (med: median) of {repeats} after warm-up{rounds}; 'x torch' = our best / PyTorch's "
          f"(faster) table time\n")

    header = (f"{'name':<10} {'fwd ms':>8} {'torch':>6} {'x torch':>7} {'fwd+bwd ms':>10} {'med':>7} "
              f"{'torch':>6} {'x torch':>7} {'GFLOP/s':>7} {'% peak':>6}")
    print(header)
    print("-" * len(header))
    rows = []
    for name, spec, torch_fwd, torch_both in SHAPES:
        if args.only and name not in args.only:
            continue
        r = bench_shape(spec, repeats, max(1, args.rounds))
        r.update(name=name, spec=dict(zip(("N", "C_in", "C_out", "HW", "kernel", "stride", "pad"), spec)),
                 torch_forward_ms=min(torch_fwd), torch_fwd_bwd_ms=min(torch_both),
                 forward_vs_torch=r["forward_best_ms"] / min(torch_fwd),
                 fwd_bwd_vs_torch=r["fwd_bwd_best_ms"] / min(torch_both),
                 fwd_bwd_peak_fraction=r["fwd_bwd_gflops"] / peak_gflops)
        rows.append(r)
        print(f"{name:<10} {r['forward_best_ms']:8.2f} {min(torch_fwd):6.2f} {r['forward_vs_torch']:7.2f} "
              f"{r['fwd_bwd_best_ms']:10.2f} {r['fwd_bwd_median_ms']:7.2f} {min(torch_both):6.2f} "
              f"{r['fwd_bwd_vs_torch']:7.2f} {r['fwd_bwd_gflops']:7.1f} "
              f"{100 * r['fwd_bwd_peak_fraction']:5.0f}%")
    summary = {}
    if rows:
        summary = {"forward_geomean_vs_torch": geomean([r["forward_vs_torch"] for r in rows]),
                   "fwd_bwd_geomean_vs_torch": geomean([r["fwd_bwd_vs_torch"] for r in rows])}
        print(f"\ngeometric mean x torch: forward {summary['forward_geomean_vs_torch']:.2f}, "
              f"forward+backward {summary['fwd_bwd_geomean_vs_torch']:.2f} (target <= 1.2)")
        for key, label in (("forward_vs_torch", "forward"), ("fwd_bwd_vs_torch", "forward+backward")):
            over = [f"{r['name']} {r[key]:.2f}x" for r in rows if r[key] > 1.5]
            print(f"{label} within 1.5x of PyTorch: " + ("all shapes" if not over else "not " + ", ".join(over)))
        heavy = [r for r in rows if r["name"] in ("cifar-2", "mnist-2", "stride-2")]
        if heavy:
            print("forward+backward >= 50% of matmul peak: " + ", ".join(
                f"{r['name']} {100 * r['fwd_bwd_peak_fraction']:.0f}%" for r in heavy))
    pool = bench_maxpool(repeats)
    print(f"MaxPool2D(2) forward+backward on {tuple(pool['shape'])}: best {pool['fwd_bwd_best_ms']:.2f} ms "
          f"(forward {pool['forward_best_ms']:.2f} ms)")
    result = {"machine": machine_info(load_average=load),
              "repeats": repeats, "rounds": args.rounds, "matmul_gflops": peak, "matmul_peak_gflops": peak_gflops,
              "shapes": rows, "summary": summary, "maxpool": pool}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
