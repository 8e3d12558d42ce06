"""BLAS threads: how many cores NumPy's matrix products use, and an automatic choice for busy machines.

NumPy's matrix products run in its BLAS library (OpenBLAS in the PyPI wheels), which starts one
thread per core. Those threads spin while they wait for each other; when another process holds
one of the cores, every product waits for the thread that is not running, and training slows down
many times over (issue 13: the default ``train.py`` run took 22 s with two busy processes on two
cores, against 4 s with one BLAS thread). :func:`set_num_threads` changes the count at run time
by calling the library's own ``openblas_set_num_threads`` (or MKL's ``MKL_Set_Num_Threads``)
through :mod:`ctypes`, found among the shared libraries the process has loaded; no extra package
is needed. :class:`AutoThreads` picks the count from the cores other processes leave free.

:func:`run_tasks` and :func:`over_batch` spend that same thread count another way: a convolution,
ReLU or max pooling over a large batch hands its chunks to as many threads, each with one BLAS
thread, so the copies around the matrix products (the expansion, col2im, the transposes) run on
every core too, not only the products.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

# (setter, getter) symbol pairs: NumPy's wheels ship OpenBLAS with a "scipy_" prefix and a 64-bit
# integer suffix; system, conda and older wheels the plain names; MKL its own
_SYMBOLS = [
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
    ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"),
]


def _loaded_libraries() -> list[str]:
    """Paths of the BLAS-looking shared libraries in this process: NumPy's bundled ones first (its
    wheels' folder), then the others loaded (Linux: /proc/self/maps), e.g. SciPy's own OpenBLAS."""
    import numpy

    root = Path(numpy.__file__).resolve().parent
    names = []
    for folder in (root.parent / "numpy.libs", root / ".dylibs"):
        if folder.is_dir():
            names += sorted(str(p) for p in folder.iterdir())
    try:
        with open("/proc/self/maps") as maps:
            names += [line.split(None, 5)[-1].strip() for line in maps if "/" in line]
    except OSError:
        pass
    wanted = ("openblas", "mkl_rt", "libmkl")
    return list(dict.fromkeys(n for n in names if any(w in Path(n).name.lower() for w in wanted)))


@functools.lru_cache(maxsize=1)
def _blas_controls() -> list:
    """(set, get, library path) for every loaded library that exports a known pair; NumPy's first."""
    controls = []
    for path in _loaded_libraries():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            setter, getter = getattr(library, set_name, None), getattr(library, get_name, None)
            if setter is not None and getter is not None:
                setter.restype, getter.restype = None, ctypes.c_int
                setter.argtypes = [ctypes.c_int]
                controls.append((setter, getter, path))
                break
    return controls


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system reports it), at most the
    thread count a user set in ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` or ``OMP_NUM_THREADS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return max(1, min(cores, int(value)))
    return max(1, cores)


def get_num_threads() -> int | None:
    """Threads NumPy's BLAS uses for a matrix product; None when the library cannot be controlled."""
    controls = _blas_controls()
    return int(controls[0][1]()) if controls else None


def set_num_threads(threads: int) -> int | None:
    """Let NumPy's matrix products use ``threads`` threads; returns the previous count.

    minicnn's layers use the same count their own way: inside a model's passes BLAS runs one thread
    and the layers split large batches across ``threads`` threads (:func:`run_parts`).

    Works for the OpenBLAS that NumPy's wheels bundle and for OpenBLAS or MKL builds of NumPy
    (found among the loaded libraries); sets every such library loaded (SciPy's too), and returns
    NumPy's previous count. Elsewhere (macOS Accelerate, a BLAS without a thread
    setting) nothing changes and None is returned.
    """
    if isinstance(threads, bool) or not isinstance(threads, (int,)) or threads < 1:
        raise ValueError(f"set_num_threads: expected a positive number of threads, got {threads!r}")
    controls = _blas_controls()
    if not controls:
        return None
    previous = int(controls[0][1]())
    for setter, _, _ in controls:  # NumPy's library and any other (SciPy ships its own)
        setter(int(threads))
    return previous


# ---- worker threads: the convolution's parts ----------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_key = (0, 0)  # (process id, workers) of the pool: a forked child inherits it without its threads
_pool_lock = threading.Lock()
_single = threading.Lock()
_single_depth = 0  # single-threaded-BLAS regions open now, over all callers
_single_previous: int | None = None  # the count to restore when the last one ends


def _after_fork_in_child() -> None:
    """A forked child has only the forking thread: no region of another thread is open in it."""
    global _pool_lock, _single, _single_depth
    _pool_lock, _single, _single_depth = threading.Lock(), threading.Lock(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _executor(workers: int) -> ThreadPoolExecutor:
    """The worker threads (started on first use; again in a forked child, or for more workers)."""
    global _pool, _pool_key
    with _pool_lock:
        pid = os.getpid()
        if _pool is None or _pool_key[0] != pid or _pool_key[1] < workers:
            if _pool is not None and _pool_key[0] == pid:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minicnn")
            _pool_key = (pid, workers)
        return _pool


def _enter_single() -> None:
    global _single_depth, _single_previous
    with _single:
        if _single_depth == 0:
            _single_previous = set_num_threads(1)
        _single_depth += 1


def _leave_single() -> None:
    global _single_depth
    with _single:
        _single_depth -= 1
        if _single_depth == 0 and _single_previous is not None:
            set_num_threads(_single_previous)


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS at one thread inside (nested and concurrent uses allowed); the count is restored when
    the last one ends. :class:`~minicnn.nn.model.Sequential` runs its passes inside: its layers
    spread their work over :func:`parts_available` threads themselves, and a BLAS thread left
    spinning by a multi-threaded product elsewhere in the pass would hold a core they need (the
    MNIST network of benchmarks/bench_train.py: 9.3 to 10.1 s per epoch against 7.1 to 7.6 s)."""
    _enter_single()
    try:
        yield
    finally:
        _leave_single()


def parts_available() -> int:
    """How many parts :func:`run_parts` may split work into: the BLAS thread count set outside
    any :func:`single_threaded_blas` (so :func:`set_num_threads`, ``--threads`` and :class:`AutoThreads`
    govern it); 1 where the BLAS library's threads cannot be controlled (they would compete with ours)."""
    with _single:
        if _single_depth > 0:
            return _single_previous or 1
    return get_num_threads() or 1


#: Bytes of array data below which a pass over a batch runs in one thread: smaller ones do not pay
#: for handing work to another thread (digits-2's convolution, 1.2 MB of scratch: forward +
#: backward 1.05 ms in one part, 1.40 ms in two; mnist-2's, 23 MB: 19.4 -> 17.5 ms in two).
PARALLEL_MIN_BYTES = 4 * 2**20


def threads_for(n: int, nbytes: int, workers: int | None = None) -> int:
    """Threads for a pass over a batch of ``n`` samples whose arrays take ``nbytes``: ``workers``, or
    when None :func:`parts_available`, but one below :data:`PARALLEL_MIN_BYTES`; never more than ``n``."""
    if workers is None:
        workers = 1 if nbytes < PARALLEL_MIN_BYTES else parts_available()
    return max(1, min(workers, n))


def split(n: int, count: int) -> list[tuple[int, int]]:
    """(start, stop) of ``count`` parts of ``range(n)`` whose sizes differ by at most one."""
    return [(k * n // count, (k + 1) * n // count) for k in range(count)]


def over_batch(work, n: int, nbytes: int) -> None:
    """``work(start, stop)`` over equal parts of a batch, one per thread of :func:`threads_for`, the
    parts on separate threads (element-wise passes, pooling: NumPy releases the GIL in them; ReLU
    forward on (64, 64, 28, 28) float32 3.7 -> 2.2 ms, 2x2 max pooling 10.5 -> 6.7 ms on two cores)."""
    parts = split(n, threads_for(n, nbytes))
    run_parts(lambda k: work(*parts[k]), len(parts), one_blas_thread=False)


def run_tasks(work, count: int, threads: int, one_blas_thread: bool = True) -> list:
    """``[work(0, t), ..., work(count - 1, t)]`` on ``threads`` threads (:func:`run_parts`), ``t``
    the index of the thread that runs the task (for its own buffers). With as many tasks as
    threads, thread k runs task k; with more, each thread takes the next task when it finishes
    one, so a thread slowed by another process on its core runs fewer. Results in task order."""
    if count <= threads:
        return run_parts(lambda k: work(k, k), count, one_blas_thread)
    results: list = [None] * count
    tasks = itertools.count()  # next() is atomic: each task is taken once

    def take(t: int) -> None:
        while (k := next(tasks)) < count:
            results[k] = work(k, t)

    run_parts(take, threads, one_blas_thread)
    return results


class OrderedSum:
    """The sum of values handed in by threads in any order, added in the order of their index
    (0, 1, 2, ...): the same float result however the threads ran, holding only the values that
    arrived before their turn. The first value becomes the total (arrays are added into it)."""

    def __init__(self):
        self.total = None
        self._next = 0
        self._waiting: dict = {}
        self._lock = threading.Lock()

    def add(self, index: int, value) -> None:
        with self._lock:
            self._waiting[index] = value
            while self._next in self._waiting:
                value = self._waiting.pop(self._next)
                if self.total is None:
                    self.total = value  # taken over: later values are added into it
                else:
                    self.total += value
                self._next += 1


def run_parts(work, parts: int, one_blas_thread: bool = True) -> list:
    """``[work(0), ..., work(parts - 1)]``, computed at the same time: part 0 in this thread, the
    others on worker threads, with BLAS at one thread meanwhile (restored afterwards).

    ``one_blas_thread`` applies to a single part: a pass too small to split has products too small
    for BLAS's threads, which cost more than they save there (digits-2 forward + backward 1.44 ms
    with one BLAS thread against 1.89 ms with two, measured alternately in one process).

    The parts must write to disjoint memory. NumPy releases the GIL in its matrix products and
    array copies, so the parts run on separate cores.
    """
    if parts <= 1 and not one_blas_thread:
        return [work(0)]
    futures = []
    with single_threaded_blas():
        try:
            if parts > 1:
                futures = [_executor(parts - 1).submit(work, k) for k in range(1, parts)]
            first = work(0)
            return [first] + [future.result() for future in futures]
        finally:
            wait(futures)  # even when a part failed: no part may outlive the single-thread setting


_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC_STAT = "/proc/stat"


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(busy, total) clock ticks since boot of the cores this process may run on, and how many
    cores they are, from /proc/stat (Linux); None elsewhere.

    Only the cores in this process's affinity count (``taskset``, a container's cpuset): a busy
    core outside them takes nothing from this process (2 of 16 cores with 14 busy elsewhere: the
    machine-wide sum would leave 2 - 14 -> 1 thread where 2 cores are free).
    """
    try:
        with open(_PROC_STAT) as stat:
            lines = [line.split() for line in stat if line.startswith("cpu")]
        rows = {name: [int(v) for v in fields[:8]] for name, *fields in lines}
    except (OSError, ValueError):
        return None
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    chosen = [rows[f"cpu{k}"] for k in sorted(mine) if f"cpu{k}" in rows]
    if not chosen:
        if "cpu" not in rows:
            return None
        chosen, count = [rows["cpu"]], os.cpu_count() or 1
    else:
        count = len(chosen)
    busy = total = 0
    for fields in chosen:
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy, total = busy + sum(fields) - idle, total + sum(fields)
    return busy, total, count


class AutoThreads:
    """Choose the BLAS thread count from the cores other processes leave free.

    :meth:`start` sets the count from the load seen since :meth:`watch` (at least ``probe_seconds``
    of it: a program that calls :meth:`watch` before it loads its data waits for nothing); each
    :meth:`update` (after every epoch) looks at the time since the last one. This process's own CPU
    time is subtracted, and only the cores it may run on are watched (its affinity).
    ``threads = round(cores - busy cores of others)``, at least 1: two busy
    processes on two cores, or one, give 1 thread; a quiet machine all cores (:func:`available_cores`:
    a thread count set in the environment caps it). Where /proc/stat is missing (not Linux), the
    count stays as it was.

    Attributes
    ----------
    threads : int or None
        The count in use (None until :meth:`start`, or where it cannot be set).
    others : float or None
        Busy cores of other processes at the last look.
    """

    def __init__(self, cores: int | None = None, probe_seconds: float = 0.1):
        self.cores = cores or available_cores()
        self.probe_seconds = probe_seconds
        self.threads: int | None = None
        self.others: float | None = None
        self._last: tuple | None = None
        self._since = 0.0

    def _mark(self):
        ticks = _cpu_ticks()
        return None if ticks is None else (ticks, time.process_time())

    def _choose(self, now) -> int | None:
        """Busy cores of others between the last mark and ``now``, and the thread count they leave."""
        assert self._last is not None, "start() marks the first sample"
        ((busy0, total0, _), own0), ((busy1, total1, cores), own1) = self._last, now
        self._last = now
        if total1 <= total0:
            return self.threads
        own_ticks = (own1 - own0) * _TICKS_PER_SECOND
        fraction = max(0.0, (busy1 - busy0 - own_ticks) / (total1 - total0))
        self.others = fraction * cores
        threads = max(1, min(self.cores, round(self.cores - self.others)))
        if threads != self.threads and set_num_threads(threads) is not None:
            self.threads = threads
        return self.threads

    def watch(self) -> AutoThreads:
        """Start looking at the load now, e.g. before a program loads its data; returns self."""
        self._last, self._since = self._mark(), time.monotonic()
        return self

    def start(self) -> int | None:
        """Set the thread count from the load since :meth:`watch` (called now if it was not),
        sleeping for what is left of ``probe_seconds``; returns the count."""
        if self._last is None:
            self.watch()
        if self._last is None or not _blas_controls():
            return None
        time.sleep(max(0.0, self.probe_seconds - (time.monotonic() - self._since)))
        return self._choose(self._mark())

    def update(self, *_) -> int | None:
        """Re-choose from the load since the last look (usable as an ``on_epoch_end`` callback)."""
        if self._last is None:
            return self.threads
        return self._choose(self._mark())


def describe() -> str:
    """One line naming the BLAS library and its thread count, for logs and benchmarks."""
    controls = _blas_controls()
    if not controls:
        return f"BLAS threads not controllable ({sys.platform})"
    return "; ".join(f"{Path(path).name}: {get()} threads" for _, get, path in controls)
