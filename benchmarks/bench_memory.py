"""Bounded convolution memory: peak scratch and time as the batch and the image grow (issue 5).

Conv2D(64 -> 128, 3x3, padding 1) forward + backward in float32. "Scratch" is the peak that
``tracemalloc`` sees (NumPy reports its allocations there) during the pass, less the output and
the input gradient; the input and the output gradient exist before it starts. The target: at most
128 MB for N=256 at 32x32, whatever the batch size. Also times mnist-2 (64, 32->64, 14x14) per
sample from batch 16 to 256 (target: flat within 25%).

    python benchmarks/bench_memory.py [--workspace-mib 64] [--rounds 4] [--json results.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from common import blas_info, cpu_name, machine_info, write_json  # noqa: E402

from minicnn.nn import _lowering as F  # noqa: E402
from minicnn.nn.layers import Conv2D  # noqa: E402

LIMIT_MB = 128


def conv_pass(batch: int, size: int, c_in: int = 64, c_out: int = 128):
    rng = np.random.default_rng(0)
    layer = Conv2D(c_in, c_out, 3, padding=1, rng=0)
    x = rng.standard_normal((batch, c_in, size, size), dtype=np.float32)
    grad = rng.standard_normal(layer.output_shape(x.shape), dtype=np.float32)
    return layer, x, grad


def scratch_mb(batch: int, size: int) -> float:
    """Peak scratch (MB, 1e6 bytes) of one forward + backward with a fresh layer."""
    layer, x, grad = conv_pass(batch, size)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = layer.forward(x)
        dx = layer.backward(grad)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return (peak - out.nbytes - dx.nbytes) / 1e6


def seconds(batch: int, size: int, repeats: int, c_in: int = 64, c_out: int = 128) -> float:
    """Best wall time of forward + backward after one warm-up pass."""
    layer, x, grad = conv_pass(batch, size, c_in, c_out)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        layer.forward(x)
        layer.backward(grad)
        if i:
            times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workspace-mib", type=float, default=None, help="workspace limit in MiB (default: minicnn's, 64)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the per-sample sweep (default 4)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.workspace_mib is not None:
        F.set_workspace_limit(int(args.workspace_mib * 2**20))
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores; NumPy {np.__version__}; BLAS: {blas_info()}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"workspace limit: {F.get_workspace_limit() / 2**20:.0f} MiB; target: scratch <= {LIMIT_MB} MB\n")
    rows = []
    print("Conv2D(64 -> 128, 3x3, pad 1), float32, forward + backward")
    header = f"{'N':>4} {'HxW':>6} {'input MB':>9} {'scratch MB':>10} {'fwd+bwd s':>9} {'ms/sample':>9}"
    print(header)
    print("-" * len(header))
    for batch, size in [(16, 32), (64, 32), (256, 32), (64, 8), (64, 16), (64, 64)]:
        mb = scratch_mb(batch, size)
        s = seconds(batch, size, args.repeats)
        rows.append(
            {
                "N": batch,
                "HW": size,
                "input_mb": batch * 64 * size * size * 4 / 1e6,
                "scratch_mb": mb,
                "fwd_bwd_s": s,
                "ms_per_sample": 1e3 * s / batch,
            }
        )
        r = rows[-1]
        print(
            f"{batch:4d} {size:>3d}x{size:<2d} {r['input_mb']:9.1f} {mb:10.1f} {s:9.3f} "
            f"{r['ms_per_sample']:9.3f}"
        )
    target = next(r for r in rows if r["N"] == 256 and r["HW"] == 32)
    worst = max(r["scratch_mb"] for r in rows)
    print(
        f"\nN=256 at 32x32: {target['scratch_mb']:.1f} MB of scratch (target <= {LIMIT_MB} MB); "
        f"largest over all rows {worst:.1f} MB"
    )

    print(
        f"\nmnist-2 (32 -> 64, 14x14, 3x3, pad 1): forward + backward time per sample, best of "
        f"{args.rounds} rounds that take the batch sizes in turn"
    )
    batches = (16, 32, 64, 128, 256)
    best = dict.fromkeys(batches, float("inf"))
    for _ in range(args.rounds):  # in turn, so that a slow minute of a shared machine hits every size
        for batch in batches:
            best[batch] = min(best[batch], seconds(batch, 14, max(args.repeats, 7), 32, 64))
    sweep = [{"N": b, "fwd_bwd_ms": 1e3 * s, "us_per_sample": 1e6 * s / b} for b, s in best.items()]
    ref = statistics.median(r["us_per_sample"] for r in sweep)
    for r in sweep:
        print(
            f"  N={r['N']:4d}: {r['fwd_bwd_ms']:7.2f} ms, {r['us_per_sample']:6.1f} us/sample "
            f"({100 * (r['us_per_sample'] / ref - 1):+.0f}% vs the median)"
        )
    per_sample = [r["us_per_sample"] for r in sweep]
    spread = max(per_sample) / min(per_sample) - 1
    print(f"  slowest / fastest per sample: +{100 * spread:.0f}% (target: within 25%)")
    result = {
        "machine": machine_info(),
        "workspace_limit_bytes": F.get_workspace_limit(),
        "conv_64_128": rows,
        "mnist2_per_sample": sweep,
        "mnist2_spread": spread,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
