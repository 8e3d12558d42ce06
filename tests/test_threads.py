"""BLAS threads: minicnn.set_num_threads, the automatic choice, and train.py's --threads / train.threads."""

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn.cli import blas_threads
from minicnn.nn import _threads
from minicnn.nn.layers import MaxPool2D, ReLU

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_threads():
    before = minicnn.get_num_threads()
    yield before
    if before is not None:
        minicnn.set_num_threads(before)


def test_set_num_threads_changes_what_the_blas_library_reports(restore_threads):
    if restore_threads is None:
        pytest.skip("this NumPy's BLAS has no thread setting")  # not the case with NumPy's wheels
    assert minicnn.set_num_threads(1) == restore_threads
    assert minicnn.get_num_threads() == 1
    a = np.random.default_rng(0).standard_normal((300, 300))
    np.testing.assert_allclose(a @ a.T, (a @ a.T).T)  # products still right with one thread
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert blas and all(i["num_threads"] == 1 for i in blas)  # an independent witness


def test_numpy_s_own_blas_is_the_one_controlled_even_after_scipy_loads_its_own(restore_threads):
    import scipy.linalg  # noqa: F401  (SciPy's wheels bring a second OpenBLAS)

    _threads._blas_controls.cache_clear()
    controls = _threads._blas_controls()
    if not controls:
        pytest.skip("this NumPy's BLAS has no thread setting")
    assert "numpy" in controls[0][2]
    minicnn.set_num_threads(1)
    assert all(get() == 1 for _, get, _ in controls)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2", None])
def test_set_num_threads_rejects_anything_but_a_positive_int(bad):
    with pytest.raises(ValueError, match=f"expected a positive number of threads, got {bad!r}"):
        minicnn.set_num_threads(bad)


class FakeMachine:
    """/proc/stat ticks and this process's CPU time, advanced by hand (100 ticks per second)."""

    def __init__(self, monkeypatch, cores=2):
        self.busy = self.total = 0
        self.own = 0.0
        self.requests = []
        monkeypatch.setattr(_threads, "_cpu_ticks", lambda: (self.busy, self.total, self.cores))
        monkeypatch.setattr(_threads.time, "process_time", lambda: self.own)
        self.clock, self.slept = 0.0, []
        monkeypatch.setattr(_threads.time, "monotonic", lambda: self.clock)
        monkeypatch.setattr(_threads.time, "sleep", self.sleep)
        monkeypatch.setattr(_threads, "set_num_threads", lambda n: self.requests.append(n) or 2)
        monkeypatch.setattr(_threads, "_TICKS_PER_SECOND", 100)
        self.cores, self.others = cores, 0.0

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.advance(seconds, others=self.others, own=0)

    def advance(self, seconds, others, own):
        """``seconds`` pass with ``others`` cores busy elsewhere and ``own`` cores used by us."""
        self.clock += seconds
        self.total += round(100 * seconds * self.cores)
        self.busy += round(100 * seconds * (others + own))
        self.own += seconds * own


@pytest.mark.parametrize("others, expected", [(0.0, 2), (0.3, 2), (1.0, 1), (2.0, 1)])
def test_auto_threads_leaves_the_cores_other_processes_use(monkeypatch, others, expected):
    machine = FakeMachine(monkeypatch)
    machine.others = others
    auto = _threads.AutoThreads(cores=2)
    assert auto.start() == expected
    assert auto.others == pytest.approx(others, abs=0.05)
    assert machine.requests == [expected]


def test_auto_threads_follows_the_load_from_epoch_to_epoch_without_counting_its_own_work(monkeypatch):
    machine = FakeMachine(monkeypatch)
    auto = _threads.AutoThreads(cores=2)
    assert auto.start() == 2
    machine.advance(3.0, others=0.0, own=2.0)  # a quiet epoch, this process on both cores
    assert auto.update() == 2
    machine.advance(3.0, others=1.4, own=0.6)  # two busy processes started
    assert auto.update() == 1
    machine.advance(3.0, others=0.0, own=1.0)  # they stopped
    assert auto.update() == 2
    assert machine.requests == [2, 1, 2]


def test_auto_threads_started_after_watching_the_programs_start_need_not_wait(monkeypatch):
    machine = FakeMachine(monkeypatch)
    machine.others = 1.0
    auto = _threads.AutoThreads(cores=2, probe_seconds=0.1).watch()
    machine.advance(0.04, others=1.0, own=1.0)  # the program loads its data beside a busy process
    assert auto.start() == 1 and auto.others == pytest.approx(1.0, abs=0.05)
    assert machine.slept == [pytest.approx(0.06)]  # only what was left of the 0.1 s
    machine.others = 0.0
    auto = _threads.AutoThreads(cores=2, probe_seconds=0.1).watch()
    machine.advance(0.5, others=0.0, own=1.0)
    assert auto.start() == 2 and machine.slept[1:] == [0.0]


def _proc_stat(path, busy_by_core, idle_by_core):
    """A /proc/stat with one line per core (user, nice, system, idle, iowait, irq, softirq, steal)."""
    lines = [f"cpu  {sum(busy_by_core)} 0 0 {sum(idle_by_core)} 0 0 0 0 0 0"]
    lines += [f"cpu{k} {b} 0 0 {i} 0 0 0 0 0 0" for k, (b, i) in enumerate(zip(busy_by_core, idle_by_core))]
    path.write_text("\n".join([*lines, "intr 12345 0 0", "ctxt 99", "btime 1"]) + "\n")


def test_auto_threads_counts_only_the_cores_this_process_may_run_on(tmp_path, monkeypatch):
    """Pinned to cores 0 and 1 of four, with cores 2 and 3 busy elsewhere: both cores are free."""
    stat = tmp_path / "stat"
    monkeypatch.setattr(_threads, "_PROC_STAT", str(stat))
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(_threads.time, "process_time", lambda: 0.0)
    requests = []
    monkeypatch.setattr(_threads, "set_num_threads", lambda n: requests.append(n) or 2)
    _proc_stat(stat, [0, 0, 0, 0], [0, 0, 0, 0])
    assert _threads._cpu_ticks() == (0, 0, 2)
    auto = _threads.AutoThreads(cores=2)
    auto._last = auto._mark()
    _proc_stat(stat, [0, 0, 100, 100], [100, 100, 0, 0])  # cores 2 and 3 busy for a second
    assert auto.update() == 2 and auto.others == 0
    _proc_stat(stat, [0, 100, 200, 200], [200, 100, 0, 0])  # then core 1 too
    assert auto.update() == 1 and auto.others == pytest.approx(1.0)
    assert requests == [2, 1]


def test_cpu_ticks_reads_the_whole_machine_when_no_core_line_matches(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(_threads, "_PROC_STAT", str(stat))
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {7}, raising=False)
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 2)
    _proc_stat(stat, [30, 10], [70, 90])
    assert _threads._cpu_ticks() == (40, 200, 2)
    stat.write_text("intr 1 2 3\n")
    assert _threads._cpu_ticks() is None
    monkeypatch.setattr(_threads, "_PROC_STAT", str(tmp_path / "missing"))
    assert _threads._cpu_ticks() is None


def test_available_cores_respects_a_thread_count_set_in_the_environment(monkeypatch):
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    cores = _threads.available_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _threads.available_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert _threads.available_cores() == cores


def test_blas_threads_sets_and_restores_the_count(restore_threads):
    if restore_threads is None:
        pytest.skip("this NumPy's BLAS has no thread setting")
    with blas_threads(1) as on_epoch_end:
        assert on_epoch_end is None and minicnn.get_num_threads() == 1
    assert minicnn.get_num_threads() == restore_threads
    with blas_threads(0) as on_epoch_end:  # automatic: a callback re-chooses after each epoch
        assert 1 <= on_epoch_end(None, {}) <= _threads.available_cores()
    assert minicnn.get_num_threads() == restore_threads


def _train_py(tmp_path, *options: str) -> subprocess.CompletedProcess:
    """One epoch of configs/digits_fast.toml through ``python train.py`` in a child process."""
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "digits_fast.toml")]
    command += ["--set", "train.epochs=1", "--set", "output.figures=false", "--out", str(tmp_path / "run")]
    return subprocess.run(
        [*command, *options], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False
    )


def test_train_py_threads_option_lands_in_the_run_config(tmp_path):
    result = _train_py(tmp_path, "--threads", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert config["train"]["threads"] == 1


def test_train_py_says_what_the_automatic_count_chose(tmp_path):
    result = _train_py(tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("BLAS threads: "))
    assert "(automatic: other processes use " in line


def test_a_negative_thread_count_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--threads", "-1", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.threads = -1" in lines[0], result.stderr


# ---- the convolution's parts on worker threads ----------------------------------------------------


def test_run_parts_returns_every_part_in_order_and_uses_other_threads(restore_threads):
    import threading

    seen = {}

    def work(k):
        seen[k] = (threading.get_ident(), minicnn.get_num_threads())
        return k * k

    assert _threads.run_parts(work, 3) == [0, 1, 4]
    assert seen[0][0] == threading.get_ident() and seen[1][0] != threading.get_ident()
    if restore_threads is not None:
        assert {threads for _, threads in seen.values()} == {1}  # one BLAS thread per part meanwhile
        assert minicnn.get_num_threads() == restore_threads  # and the count is back afterwards


def test_run_parts_restores_the_blas_count_and_waits_for_every_part_when_one_fails(restore_threads):
    import time

    finished = []

    def work(k):
        if k == 0:
            raise RuntimeError("part 0 failed")
        time.sleep(0.05)
        finished.append(k)

    with pytest.raises(RuntimeError, match="part 0 failed"):
        _threads.run_parts(work, 2)
    assert finished == [1]  # the other part was not abandoned mid-way
    assert minicnn.get_num_threads() == restore_threads


def test_parts_follow_the_blas_thread_count(restore_threads):
    if restore_threads is None:
        pytest.skip("this NumPy's BLAS has no thread setting")
    minicnn.set_num_threads(1)
    assert _threads.parts_available() == 1  # one thread: the convolution runs as before, in one part
    minicnn.set_num_threads(2)
    assert _threads.parts_available() == 2


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: ReLU(), (5, 3, 4, 4)),
        (lambda: ReLU(), (7,)),  # any shape: the elements are split, not the samples
        (lambda: MaxPool2D(2), (5, 3, 6, 6)),
        (lambda: MaxPool2D(3, stride=2, padding=1), (5, 2, 7, 5)),  # overlapping windows, padding
    ],
)
def test_layers_split_across_threads_give_the_one_thread_results(monkeypatch, make, shape, workers):
    rng = np.random.default_rng(workers)
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[3] = np.nan  # propagates forward, gets no gradient, the same way in every part
    one = make()
    expected_out = one.forward(x)
    grad = rng.standard_normal(expected_out.shape).astype(np.float32)
    expected_dx = one.backward(grad)
    monkeypatch.setattr(_threads, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(_threads, "parts_available", lambda: workers)
    split = make()
    np.testing.assert_array_equal(split.forward(x), expected_out)
    np.testing.assert_array_equal(split.backward(grad), expected_dx)


def test_run_tasks_lets_a_free_thread_take_the_tasks_a_slow_one_cannot():
    import threading
    import time

    ran_by = {}

    def work(k, t):
        ran_by[k] = t
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.2)  # this thread's core is busy elsewhere
        return 10 * k

    assert _threads.run_tasks(work, 6, 2) == [0, 10, 20, 30, 40, 50]  # in task order
    assert sorted(ran_by) == list(range(6))
    assert list(ran_by.values()).count(0) == 1  # the slow thread ran one task, the other five


def test_ordered_sum_adds_in_index_order_whatever_the_arrival_order():
    values = [np.float32(1e8), np.float32(1.0), np.float32(-1e8), np.float32(1.0)]
    in_order = _threads.OrderedSum()
    for k, v in enumerate(values):
        in_order.add(k, np.array(v))
    shuffled = _threads.OrderedSum()
    for k in (3, 1, 2, 0):
        shuffled.add(k, np.array(values[k]))
    assert shuffled.total == in_order.total  # ((1e8 + 1) - 1e8) + 1 in float32, not 1e8 + 1 + 1 - 1e8
    assert float(in_order.total) == float(((values[0] + values[1]) + values[2]) + values[3])


def _two_parts():
    return _threads.run_parts(lambda k: k, 2, one_blas_thread=False)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this system")
def test_a_forked_child_starts_worker_threads_of_its_own():
    import multiprocessing

    assert _two_parts() == [0, 1]  # the parent's worker thread now exists
    with multiprocessing.get_context("fork").Pool(1) as pool:
        # the child inherits the pool object but not its thread: it must start its own
        assert pool.apply_async(_two_parts).get(timeout=60) == [0, 1]
