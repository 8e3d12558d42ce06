"""Conv2D speed beside PyTorch, measured in the same run (issue 13).

For eight layer shapes, times Conv2D forward and forward+backward (input and weight gradients) in
float32, minicnn and PyTorch each in its own worker process, asked in turn over ``--rounds``
alternating rounds (best of ``--repeats`` runs after warm-up in each); prints each library's best
time, the ratio minicnn / PyTorch, GFLOP/s, and that as a fraction of the NumPy float32 matmul
peak measured in the same run. Without PyTorch (``pip install -e ".[bench]"``) only minicnn's
numbers are printed and the comparison is said to be skipped.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_conv.py \
        [--rounds 3] [--json out.json]

FLOPs: forward ``2*N*C_out*H_out*W_out*C_in*kh*kw``; backward twice that, so forward+backward is
three times the forward count (whatever algorithm computes it: Winograd's does fewer).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    Worker,
    alternate,
    blas_info,
    geomean,
    load_text,
    machine_info,
    machine_line,
    serve,
    set_minicnn_threads,
    timeit,
    torch_available,
    torch_setup,
    write_json,
)

#: name, (N, C_in, C_out, H=W, kernel, stride, pad)
SHAPES = [
    ("digits-1", (64, 1, 16, 8, 3, 1, 1)),
    ("digits-2", (64, 16, 32, 4, 3, 1, 1)),
    ("mnist-1", (64, 1, 32, 28, 3, 1, 1)),
    ("mnist-2", (64, 32, 64, 14, 3, 1, 1)),
    ("cifar-1", (64, 3, 64, 32, 3, 1, 1)),
    ("cifar-2", (64, 64, 128, 16, 3, 1, 1)),
    ("stride-2", (64, 32, 64, 28, 3, 2, 1)),
    ("lenet-5x5", (64, 1, 20, 28, 5, 1, 0)),
]
HEAVY = ("cifar-2", "mnist-2", "stride-2")
TARGET_RATIO, TARGET_GEOMEAN, TARGET_PEAK = 1.0, 0.8, 0.75


# ---- inside the workers ------------------------------------------------------------------------


def minicnn_conv(spec, repeats: int) -> dict:
    from minicnn.nn.layers import Conv2D

    n, c_in, c_out, size, k, stride, pad = spec
    rng = np.random.default_rng(0)
    layer = Conv2D(c_in, c_out, k, stride=stride, padding=pad, rng=0)
    x = rng.standard_normal((n, c_in, size, size), dtype=np.float32)
    grad = rng.standard_normal(layer.output_shape(x.shape), dtype=np.float32)

    def fwd_bwd():
        layer.forward(x)
        layer.backward(grad)

    fwd, both = timeit(lambda: layer.forward(x), repeats), timeit(fwd_bwd, repeats)
    return {"forward_s": fwd[0], "best_s": both[0], "median_s": both[1]}


def torch_conv(spec, repeats: int) -> dict:
    import torch

    n, c_in, c_out, size, k, stride, pad = spec
    conv = torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad)
    x = torch.randn(n, c_in, size, size, requires_grad=True)
    grad = torch.randn(conv(x).shape)

    def forward():
        with torch.no_grad():
            conv(x)

    def fwd_bwd():
        x.grad = conv.weight.grad = conv.bias.grad = None
        conv(x).backward(grad)

    fwd, both = timeit(forward, repeats), timeit(fwd_bwd, repeats)
    return {"forward_s": fwd[0], "best_s": both[0], "median_s": both[1]}


def matmul_peak(repeats: int, sizes=(512, 1024, 2048)) -> dict:
    """NumPy float32 matmul GFLOP/s per size (best of ``repeats``), in ``best_s`` the 1024 time."""
    rng = np.random.default_rng(0)
    result = {}
    for size in sizes:
        a = rng.standard_normal((size, size), dtype=np.float32)
        out = np.empty_like(a)
        best, _ = timeit(
            lambda a=a, out=out: np.matmul(a, a, out=out), repeats if size < 2048 else max(3, repeats // 3)
        )
        result[str(size)] = 2 * size**3 / best / 1e9
    return {"gflops": result, "best_s": 2 * 1024**3 / result.get("1024", max(result.values())) / 1e9}


def worker(library: str, threads: int | None, winograd: bool = False) -> None:
    shapes = dict(SHAPES)
    if library == "torch":
        about = torch_setup(threads)
        serve(
            {
                "about": lambda: {"about": about},
                "conv": lambda shape, repeats: torch_conv(shapes[shape], repeats),
            }
        )
    else:
        set_minicnn_threads(threads)
        from minicnn.nn import _lowering

        _lowering.set_winograd(winograd)
        algorithm = "Winograd F(2x2, 3x3) where it applies, else im2col" if winograd else "im2col"
        serve(
            {
                "about": lambda: {"about": f"minicnn ({algorithm}), BLAS: {blas_info()}"},
                "peak": lambda repeats: matmul_peak(repeats),
                "conv": lambda shape, repeats: minicnn_conv(shapes[shape], repeats),
            }
        )


# ---- the parent: ask, compare, print -----------------------------------------------------------


def flops(spec) -> int:
    n, c_in, c_out, size, k, stride, pad = spec
    out = (size + 2 * pad - k) // stride + 1
    return 2 * n * c_out * out * out * c_in * k * k


def measure(workers, names, rounds: int, repeats: int) -> tuple[list[dict], float]:
    peak = alternate(workers[:1], "peak", rounds, repeats=repeats)["minicnn"]
    peak_gflops = max(peak["gflops"].values())
    print(
        "float32 matmul GFLOP/s: "
        + ", ".join(f"{k}: {v:.0f}" for k, v in peak["gflops"].items())
        + f" (peak used: {peak_gflops:.0f}; {load_text()})\n"
    )
    header = (
        f"{'name':<10} {'fwd ms':>7} {'fwd+bwd ms':>10} {'torch ms':>8} {'ratio':>6} "
        f"{'GFLOP/s':>7} {'% peak':>6}  load (1 min) at the best times"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name, spec in SHAPES:
        if names and name not in names:
            continue
        best = alternate(workers, "conv", rounds, shape=name, repeats=repeats)
        ours, theirs = best["minicnn"], best.get("torch")
        gflops = 3 * flops(spec) / ours["best_s"] / 1e9
        row = {
            "name": name,
            "spec": spec,
            "forward_ms": 1e3 * ours["forward_s"],
            "fwd_bwd_ms": 1e3 * ours["best_s"],
            "fwd_bwd_median_ms": 1e3 * ours["median_s"],
            "gflops": gflops,
            "peak_fraction": gflops / peak_gflops,
            "load": ours["load"][0],
        }
        if theirs:
            row.update(
                torch_fwd_bwd_ms=1e3 * theirs["best_s"],
                torch_forward_ms=1e3 * theirs["forward_s"],
                ratio=ours["best_s"] / theirs["best_s"],
                torch_load=theirs["load"][0],
            )
        rows.append(row)
        torch_text = f"{row['torch_fwd_bwd_ms']:8.2f} {row['ratio']:6.2f}" if theirs else f"{'-':>8} {'-':>6}"
        loads = f"{row['load']:.1f}" + (f" / {row['torch_load']:.1f}" if theirs else "")
        print(
            f"{name:<10} {row['forward_ms']:7.2f} {row['fwd_bwd_ms']:10.2f} {torch_text} {gflops:7.1f} "
            f"{100 * row['peak_fraction']:5.0f}%  {loads}"
        )
    return rows, peak_gflops


def verdict(rows: list[dict], compared: bool) -> dict:
    """Print and return the targets of issue 13 against the rows."""
    summary = {}
    heavy = [r for r in rows if r["name"] in HEAVY]
    if heavy:
        summary["heavy_peak"] = {r["name"]: r["peak_fraction"] for r in heavy}
        met = all(r["peak_fraction"] >= TARGET_PEAK for r in heavy)
        print(
            f"forward+backward >= {100 * TARGET_PEAK:.0f}% of the matmul peak: "
            + ", ".join(f"{r['name']} {100 * r['peak_fraction']:.0f}%" for r in heavy)
            + (" (met)" if met else " (NOT met)")
        )
    if not compared:
        print('comparison with PyTorch skipped: PyTorch is not installed (pip install -e ".[bench]")')
        return summary
    summary["geomean_ratio"] = geomean(r["ratio"] for r in rows)
    over = [f"{r['name']} {r['ratio']:.2f}" for r in rows if r["ratio"] > TARGET_RATIO]
    print(
        f"geometric mean of the ratios: {summary['geomean_ratio']:.2f} (target <= {TARGET_GEOMEAN}: "
        f"{'met' if summary['geomean_ratio'] <= TARGET_GEOMEAN else 'NOT met'})"
    )
    print(
        f"every shape at most {TARGET_RATIO:.1f}x PyTorch's time: "
        + ("met" if not over else "NOT met: " + ", ".join(over))
    )
    return summary


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (>= 5)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; each library's best is kept"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="threads for both libraries (default: minicnn's and PyTorch's defaults: all cores)",
    )
    parser.add_argument("--only", nargs="*", help="names of the shapes to run (default: all)")
    parser.add_argument(
        "--winograd", action="store_true", help="minicnn with Winograd F(2x2, 3x3) switched on"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--worker", choices=("minicnn", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads, args.winograd)
    compared = torch_available() and not args.no_torch
    extra = ["--winograd"] if args.winograd else []
    workers = [Worker(__file__, "minicnn", args.threads, extra)] + (
        [Worker(__file__, "torch", args.threads)] if compared else []
    )
    try:
        print(machine_line())
        for w in workers:
            print(w.ask("about")["about"])
        print(
            "forward+backward in float32, each library in its own process, "
            f"{args.rounds} alternating rounds, "
            f"best of {max(5, args.repeats)} runs; ratio = minicnn / PyTorch"
        )
        rows, peak = measure(workers, args.only, max(1, args.rounds), max(5, args.repeats))
        print()
        summary = verdict(rows, compared)
    finally:
        for w in workers:
            w.close()
    result = {
        "machine": machine_info(),
        "rounds": args.rounds,
        "repeats": args.repeats,
        "threads": args.threads,
        "winograd": args.winograd,
        "matmul_peak_gflops": peak,
        "shapes": rows,
        "summary": summary,
        "compared_with_torch": compared,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
