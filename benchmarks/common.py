"""What every benchmark script shares: the machine's description, timing, and side-by-side workers.

Side by side (issue 13): each library runs in its own process (a *worker*), so neither one's
thread pool, spinning or sleeping, slows the other; the parent asks the workers in turn, one
measurement at a time, alternating which goes first, and keeps each one's best time. A worker
reads one JSON request per line on stdin and answers one JSON line on stdout.

Run benchmarks with ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/...``: with
those variables unset, OpenBLAS picks the kernel of the processor it runs on (see README).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def blas_info() -> str:
    """The BLAS library NumPy calls, its kernel and thread count, as threadpoolctl reports them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    libs = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads, "
        f"{i.get('architecture')} kernel)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
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


def load_average() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def load_text() -> str:
    """``load 1.02 0.80 0.55`` (1, 5 and 15 minutes), for beside every timing."""
    load = load_average()
    return "load n/a" if load is None else "load " + " ".join(f"{v:.2f}" for v in load)


def machine_info(**extra) -> dict:
    """What the numbers were measured on, for the JSON output of every benchmark script."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "load_average": load_average(),
        "openblas_env": {
            k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")
        },
        **extra,
    }


def machine_line() -> str:
    env = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    warning = (
        f"  [warning: {', '.join(env)} set: run with env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE]"
        if env
        else ""
    )
    return (
        f"machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"NumPy {np.__version__}; {load_text()}{warning}"
    )


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


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def set_minicnn_threads(threads: int | None) -> None:
    if threads:
        from minicnn import set_num_threads

        set_num_threads(threads)


def torch_setup(threads: int | None) -> str:
    """Import PyTorch in a worker with ``threads`` intra-op threads (default: all cores); its description."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads or cores)
    return f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"


def serve(handlers: dict) -> None:
    """The worker's loop: each stdin line is ``{"task": name, ...}``; ``handlers[name](**rest)``
    answers one JSON line. Ends at end of input."""
    for line in sys.stdin:
        request = json.loads(line)
        answer = handlers[request.pop("task")](**request)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class Worker:
    """One library's worker process: ``python <script> --worker <library> [--threads N]``."""

    def __init__(self, script: str, library: str, threads: int | None = None, extra=()):
        command = [sys.executable, "-u", script, "--worker", library, *extra]
        if threads:
            command += ["--threads", str(threads)]
        self.library = library
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, task: str, **request) -> dict:
        self.process.stdin.write(json.dumps({"task": task, **request}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.library} worker stopped (exit {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def alternate(workers: list[Worker], task: str, rounds: int, pause: float = 0.2, **request) -> dict:
    """Ask every worker ``task`` in ``rounds`` rounds, the first one first in even rounds and last
    in odd ones; per library the answer with the best ``best_s``, with the load average beside it.
    ``pause`` lets the previous worker's BLAS threads go to sleep before the next one starts."""
    best = {}
    for r in range(rounds):
        for worker in workers if r % 2 == 0 else workers[::-1]:
            time.sleep(pause)
            answer = worker.ask(task, **request)
            answer["load"] = load_average()
            if worker.library not in best or answer["best_s"] < best[worker.library]["best_s"]:
                best[worker.library] = answer
    return best
