"""Training on a busy machine: no collapse when other processes hold the cores (issue 13).

Times ``python train.py --set train.epochs=5 --set output.figures=false --quiet`` (the default config)
with 0 and then ``--busy`` busy-loop processes that this script starts and stops itself, for the
automatic thread count (the default) and fixed counts (``--threads``). Each setting runs
``--repeats`` times, alternating settings; the best wall time is kept.

Targets: with two busy processes on two cores, the default run takes at most 2 times its quiet time;
quiet, the default is at most 5% slower than all cores (``--threads <cores>``, NumPy's own default).
With ``--conv``, also runs bench_conv.py's side-by-side comparison under one busy process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_contention.py \
        [--busy 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT, load_text, machine_info, machine_line, write_json  # noqa: E402

SLOWDOWN_TARGET, QUIET_TARGET = 2.0, 1.05


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` processes that keep one core each busy, stopped on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5 if procs else 0)
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def train_seconds(threads: int | None, epochs: int) -> float:
    """Wall time of one train.py run (None: the default thread setting)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            str(ROOT / "train.py"),
            "--set",
            f"train.epochs={epochs}",
            "--set",
            "output.figures=false",
            "--quiet",
            "--out",
            str(Path(tmp) / "run"),
        ]
        command += [] if threads is None else ["--threads", str(threads)]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        return time.perf_counter() - start


def others_busy(seconds: float = 3.0) -> float | None:
    """Cores kept busy by other processes over ``seconds`` while this one idles (/proc/stat; None
    elsewhere). The load average cannot tell: it still counts the runs this script just made."""
    from minicnn.nn._threads import AutoThreads  # common.py put the checkout on sys.path

    probe = AutoThreads(probe_seconds=seconds)
    probe.start()
    return probe.others


def measure(settings: list[int | None], busy: int, repeats: int, epochs: int) -> dict:
    best = {}
    with busy_processes(busy):
        for r in range(repeats):
            for threads in settings if r % 2 == 0 else settings[::-1]:
                seconds = train_seconds(threads, epochs)
                best[threads] = min(seconds, best.get(threads, seconds))
        load, load_1min = load_text(), os.getloadavg()[0]
    label = lambda t: "auto (default)" if t is None else f"--threads {t}"  # noqa: E731
    for threads in settings:
        print(f"  {busy} busy: {label(threads):<15} {best[threads]:6.2f} s  ({load})")
    return {
        "busy": busy,
        "load": load,
        "load_1min": load_1min,
        "seconds": {label(t): best[t] for t in settings},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=2, help="busy processes in the loaded runs")
    parser.add_argument(
        "--threads", type=int, nargs="*", help="fixed thread counts to compare (default: 1 and all cores)"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--conv", action="store_true", help="also bench_conv.py under one busy process")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = [None] + (args.threads if args.threads is not None else sorted({1, cores}))
    print(machine_line())
    print(
        f"python train.py --set train.epochs={args.epochs} --set output.figures=false --quiet, best of "
        f"{args.repeats} (alternating settings)"
    )
    others = others_busy()
    if others is not None:
        print(
            f"other processes keep {others:.2f} of {cores} cores busy (/proc/stat over 3 s, before the runs)"
        )
    quiet = measure(settings, 0, args.repeats, args.epochs)
    loaded = measure(settings, args.busy, args.repeats, args.epochs)
    auto = "auto (default)"
    slowdown = loaded["seconds"][auto] / quiet["seconds"][auto]
    all_cores = quiet["seconds"].get(f"--threads {cores}")
    if others is None or others > 0.5:
        seen = "unknown" if others is None else f"{others:.2f} cores busy"
        print(
            f"\nwarning: the machine was not quiet ({seen} before our runs): the targets below may "
            "compare two busy states and cannot be judged from this run"
        )
    print(
        f"\ndefault with {args.busy} busy / quiet: {slowdown:.2f}x (target <= {SLOWDOWN_TARGET:.0f}x: "
        f"{'met' if slowdown <= SLOWDOWN_TARGET else 'NOT met'})"
    )
    summary = {"slowdown": slowdown}
    if all_cores:
        summary["quiet_vs_all_cores"] = quiet["seconds"][auto] / all_cores
        print(
            f"quiet, default / --threads {cores}: {summary['quiet_vs_all_cores']:.2f} "
            f"(target <= {QUIET_TARGET}: "
            f"{'met' if summary['quiet_vs_all_cores'] <= QUIET_TARGET else 'NOT met'})"
        )
    if args.conv:
        import bench_conv

        print("\nbench_conv.py under one busy process:")
        with busy_processes(1):
            summary["conv_one_busy"] = bench_conv.main(["--rounds", "2"])["summary"]
    result = {
        "machine": machine_info(),
        "others_busy": others,
        "quiet": quiet,
        "loaded": loaded,
        "summary": summary,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
