"""Issue 23, hostile inputs round two, class by class: nothing written through links or over non-files,
nothing served but the page, one writer per run folder, resume checked against what it trained under,
memory checked before allocating, nothing that blocks forever, one line for every error.

Commands run in-process (``main(argv)``) with a one-epoch model and no figures, except where a real
second process is the point (the lock, kill -9). Servers bind 127.0.0.1 only.
"""

import contextlib
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK, one_line_exit_2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicnn import io
from minicnn.cli import main as train_main
from minicnn.train.rundir import LOCK_NAME, RunDir

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("default_memory_budget")


def snapshot(folder: Path) -> dict:
    """Every entry of ``folder``: its kind and, for files, its bytes (links not followed)."""
    state = {}
    for entry in sorted(os.listdir(folder)):
        path = folder / entry
        if path.is_symlink():
            state[entry] = ("link", os.readlink(path))
        elif path.is_file():
            state[entry] = ("file", path.read_bytes())
        else:
            state[entry] = ("other", None)
    return state


# --- 1. nothing written through a link or over a non-file ---------------------------------------------

KINDS = ("link to a file", "dangling link", "link to a folder", "folder", "fifo")


def plant(path: Path, kind: str, outside: Path) -> Path | None:
    """Put ``kind`` under ``path``; returns the outside file a link points to (or None)."""
    if kind == "link to a file":
        target = outside / f"target-{path.name}"
        target.write_bytes(b"precious")
        os.symlink(target, path)
        return target
    if kind == "dangling link":
        os.symlink(outside / f"nothing-{path.name}", path)
    elif kind == "link to a folder":
        os.symlink(outside, path)
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    return None


def _figure(path):
    from minicnn.see import plots

    fig = plots.new_figure(2, 2)
    fig.subplots().plot([0, 1], [1, 0])
    plots.save(fig, path)


def _gif(path):
    from minicnn.see import kernels

    history = {"epochs": [0, 1], "kernels": np.random.default_rng(0).normal(size=(2, 2, 1, 3, 3))}
    kernels.animate_filters_evolution(history, path)


def _model(path):
    from minicnn.nn.layers import Dense
    from minicnn.nn.model import Sequential

    Sequential(Dense(2, 2, rng=0)).save(path)


WRITERS = {
    "npz": lambda p: io.save_npz_atomic(p, {"x": np.zeros(2)}),
    "text": lambda p: io.write_text_atomic(p, "text"),
    "bytes": lambda p: io.write_bytes_atomic(p, b"bytes"),
    "safetensors": lambda p: io.write_safetensors(p, {"x": np.zeros(2, np.float32)}),
    "model": _model,
    "figure": _figure,
    "gif": _gif,
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_refuses_a_name_that_is_not_a_regular_file(tmp_path, writer, kind):
    folder, outside = tmp_path / "folder", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    name = {"model": "m.npz", "safetensors": "t.safetensors", "gif": "e.gif"}.get(writer, "f.png")
    target = plant(folder / name, kind, outside)
    before, outside_before = snapshot(folder), snapshot(outside)
    with pytest.raises(io.UnsafeTargetError, match=f"{name} is a"):
        WRITERS[writer](folder / name)
    assert snapshot(folder) == before and snapshot(outside) == outside_before  # no temporary left
    assert target is None or target.read_bytes() == b"precious"


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_writes_a_regular_file_atomically(tmp_path, writer):
    name = {"model": "m.npz", "safetensors": "t.safetensors", "gif": "e.gif"}.get(writer, "f.png")
    (tmp_path / name).write_bytes(b"old")
    WRITERS[writer](tmp_path / name)
    assert (tmp_path / name).read_bytes() != b"old" and os.listdir(tmp_path) == [name]


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        io.write_text_atomic(tmp_path / "metrics.json", "{}")
    from minicnn.errors import describe

    assert describe(caught.value) == f"{tmp_path / 'metrics.json'}: No space left on device"
    assert os.listdir(tmp_path) == []


def test_ulimit_f_is_one_line_naming_the_file(tmp_path):
    import resource

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *QUICK, "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'r' / 'last.npz'}: File too large"
    ], result.stderr
    assert not [name for name in os.listdir(tmp_path / "r") if name.startswith(".tmp-")]


def test_the_files_a_run_writes_come_from_one_list():
    from minicnn.train import rundir

    assert "filters_evolution.gif" in RunDir.FILES
    assert set(rundir.FIGURES) <= set(RunDir.FILES) and len(set(RunDir.FILES)) == len(RunDir.FILES)


@pytest.mark.parametrize("name", RunDir.FILES)
def test_resume_refuses_a_link_planted_under_any_name_a_run_writes(run_copy, tmp_path, capsys, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    if (run_copy / name).exists():
        shutil.copy(run_copy / name, outside / name)  # the link's target holds the same bytes
        (run_copy / name).unlink()
        os.symlink(outside / name, run_copy / name)
        target = outside / name
    else:
        target = plant(run_copy / name, "link to a file", outside)
    before = target.read_bytes()
    line = one_line_exit_2(capsys, train_main(["--resume", str(run_copy), "--quiet"]))
    assert f"{name} is a symbolic link" in line
    assert target.read_bytes() == before


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_overwrite_refuses_a_non_file_under_a_run_name_and_removes_only_links(tmp_path, capsys, kind):
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    targets = [plant(run / name, "link to a file", outside) for name in ("history.png", "last.npz")]
    plant(run / "filters_evolution.gif", kind, outside)
    line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(run), "--overwrite"]))
    assert "filters_evolution.gif is a" in line
    os.rmdir(run / "filters_evolution.gif") if kind == "folder" else os.unlink(run / "filters_evolution.gif")
    assert train_main(QUICK + ["--out", str(run), "--overwrite"]) == 0
    assert all(t.read_bytes() == b"precious" for t in targets)  # the links went, their targets stayed
    assert not (run / "history.png").exists() and (run / "last.npz").is_file()
    assert not (run / "last.npz").is_symlink()


def test_inspect_and_gallery_refuse_links_planted_under_their_figures(finished_run, tmp_path, capsys):
    from minicnn.see.gallery import main as gallery_main
    from minicnn.see.inspect import main as inspect_main

    outside = tmp_path / "outside"
    outside.mkdir()
    from minicnn.train.rundir import FIGURES

    # inspect's own figures for layer 0 and image 0, then the run figures it redraws
    names = ["filters_layer0.png", "feature_maps_layer0_image0.png", "filters_learned_layer0.png", *FIGURES]
    (tmp_path / "second").mkdir()
    targets = [plant(tmp_path / "second" / name, "link to a file", outside) for name in names]
    line = one_line_exit_2(capsys, inspect_main([str(finished_run), "--out", str(tmp_path / "second")]))
    assert "is a symbolic link" in line
    assert all(target.read_bytes() == b"precious" for target in targets)
    target = plant(tmp_path / "gallery.png", "link to a file", outside)
    assert "gallery.png is a symbolic link" in one_line_exit_2(capsys, gallery_main(["--out", str(tmp_path)]))
    assert target.read_bytes() == b"precious"


def test_explore_out_and_export_onnx_refuse_a_fifo(finished_run, tmp_path, capsys):
    from minicnn.export import main as export_main
    from minicnn.see.explore import main as explore_main

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "fifo is a FIFO" in one_line_exit_2(capsys, explore_main([str(finished_run), "--out", str(fifo)]))
    pytest.importorskip("onnx")
    assert "fifo is a FIFO" in one_line_exit_2(capsys, export_main([str(finished_run), "--onnx", str(fifo)]))
    assert Path(fifo).is_fifo()


# --- 2. the server serves the page and nothing else ---------------------------------------------------


@pytest.fixture
def page_server(tmp_path):
    from minicnn.see.explore import make_server

    page = tmp_path / "page.html"
    page.write_bytes(b"<html>" + b"x" * (4 << 20) + b"</html>")  # large enough to be cut off mid-answer
    for name in ("last.npz", "config.toml", "secret.txt"):
        (tmp_path / name).write_text("secret")
    os.symlink("/etc/hostname", tmp_path / "link.txt")
    server = make_server(page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, page
    server.shutdown()
    server.server_close()


def get(server, path: str, host: str | None = None) -> tuple[int, bytes]:
    port = server.server_address[1]
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if host is not None:
        request.add_unredirected_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/last.npz",
        "/config.toml",
        "/secret.txt",
        "/link.txt",
        "/page.html/",
        "/../last.npz",
        "/%2e%2e/x",
    ],
)
def test_serve_answers_404_for_everything_but_the_page(page_server, path):
    server, page = page_server
    assert get(server, path) == (404, b"")
    assert get(server, "/page.html") == (200, page.read_bytes())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30))
def test_serve_answers_404_for_any_other_path(page_server, path):
    server, _ = page_server
    target = "/" + urllib.parse.quote(path)
    status, body = get(server, target)
    assert (status, bool(body)) == ((200, True) if target == "/page.html" else (404, False))


@pytest.mark.parametrize(
    "host", ["evil.example:{port}", "127.0.0.1", "localhost:1", "", "127.0.0.1.nip.io:{port}"]
)
def test_serve_refuses_a_foreign_host_header(page_server, host):
    server, _ = page_server
    port = server.server_address[1]
    assert get(server, "/page.html", host.format(port=port))[0] == 421
    assert get(server, "/page.html", f"localhost:{port}")[0] == 200


def test_serve_is_quiet_when_a_client_disconnects_mid_answer(page_server, capfd):
    server, page = page_server
    port = server.server_address[1]
    for _ in range(3):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(f"GET /page.html HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        client.recv(1024)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
        client.close()
    time.sleep(0.5)
    assert get(server, "/page.html") == (200, page.read_bytes())  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err


# --- 3. one writer per run folder ---------------------------------------------------------------------


def _wait_for(predicate, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_a_second_writer_is_refused_naming_the_first_and_kill_9_frees_the_folder(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *QUICK, "--set", "train.epochs=100000", "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = run / LOCK_NAME
        _wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(holder.pid))
        _wait_for(lambda: (run / "metrics.json").is_file())  # an epoch or more is done
        second = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *QUICK, "--out", str(run), "--overwrite"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert f"is in use by process {holder.pid}" in second.stderr
        line = one_line_exit_2(capsys, train_main(["--resume", str(run), "--quiet"]))
        assert f"in use by process {holder.pid}" in line
        line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(run)]))  # not "not empty"
        assert f"in use by process {holder.pid}" in line
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait(timeout=30)
    trained = int(io.load_npz(run / "last.npz")["epoch"])
    resumed = ["--resume", str(run), "--quiet", "--set", f"train.epochs={trained + 1}"]
    assert train_main(resumed) == 0  # the dead holder left no lock behind
    assert int(io.load_npz(run / "last.npz")["epoch"]) == trained + 1
    assert lock.read_text().strip() == str(os.getpid())


def test_a_lock_held_in_this_process_refuses_a_run_and_is_released_after(tmp_path, capsys):
    run = tmp_path / "run"
    with RunDir(run).locked():
        line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(run)]))
    assert f"in use by process {os.getpid()}" in line
    assert train_main(QUICK + ["--out", str(run)]) == 0


# --- 4. resume trusts nothing it can check ------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("lr = ", "lr = 5.0\n#", "train.lr"),
        ("seed = 0", "seed = 7", "seed"),
        ("batch_size = 64", "batch_size = 32", "batch_size"),
    ],
)
def test_resume_refuses_a_hand_edited_config(run_copy, capsys, old, new, key):
    config = run_copy / "config.toml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    before = snapshot(run_copy)
    line = one_line_exit_2(capsys, train_main(["--resume", str(run_copy), "--quiet"]))
    assert "last.npz" in line and key in line
    assert snapshot(run_copy) == before


def test_resume_refuses_a_checkpoint_or_config_from_another_run(finished_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert train_main(QUICK + ["--out", str(other), "--seed", "3"]) == 0
    for name in ("last.npz", "config.toml"):
        run = Path(shutil.copytree(finished_run, tmp_path / f"run-{name}"))
        shutil.copy(other / name, run / name)
        line = one_line_exit_2(capsys, train_main(["--resume", str(run), "--quiet"]))
        assert "seed" in line and "last.npz" in line


def _edit_checkpoint(run: Path, change) -> None:
    state = io.load_npz(run / "last.npz")
    change(state)
    io.save_npz_atomic(run / "last.npz", state)


def _history(state, edit):
    history = json.loads(str(state["history"]))
    edit(history)
    state["history"] = np.array(json.dumps(history))


BAD_CHECKPOINTS = {
    "a record without its loss": lambda s: _history(s, lambda h: h[0].pop("train_loss")),
    "a loss that is a string": lambda s: _history(s, lambda h: h[0].update(train_loss="low")),
    "a record of the wrong epoch": lambda s: _history(s, lambda h: h[0].update(epoch=5)),
    "a record that is a list": lambda s: _history(s, lambda h: h.__setitem__(0, [1])),
    "best weights of the wrong shape": lambda s: s.update({"best/0.weight": np.zeros((1, 1), np.float32)}),
    "best weights missing a key": lambda s: s.pop("best/0.bias"),
    "complex weights": lambda s: s.update({"model/0.weight": s["model/0.weight"].astype(np.complex64)}),
    "integer weights": lambda s: s.update({"model/0.bias": s["model/0.bias"].astype(np.int64)}),
    "no record of its config": lambda s: s.pop("run/config"),
}


@pytest.mark.parametrize("defect", sorted(BAD_CHECKPOINTS))
def test_resume_refuses_a_malformed_checkpoint_before_training(run_copy, capsys, defect):
    _edit_checkpoint(run_copy, BAD_CHECKPOINTS[defect])
    before = snapshot(run_copy)
    line = one_line_exit_2(capsys, train_main(["--resume", str(run_copy), "--quiet"]))
    assert "last.npz" in line and "KeyError" not in line
    assert snapshot(run_copy) == before


BAD_KERNEL_HISTORIES = {
    "no kernels": {"epochs": np.arange(2), "layer": np.array(0)},
    "epochs not increasing": {
        "epochs": np.array([1, 0]),
        "kernels": np.zeros((2, 8, 1, 3, 3)),
        "layer": np.array(0),
    },
    "kernels of the wrong rank": {"epochs": np.arange(2), "kernels": np.zeros((2, 8)), "layer": np.array(0)},
    "NaN kernels": {
        "epochs": np.arange(2),
        "kernels": np.full((2, 8, 1, 3, 3), np.nan),
        "layer": np.array(0),
    },
    "a layer list": {"epochs": np.arange(2), "kernels": np.zeros((2, 8, 1, 3, 3)), "layer": np.arange(2)},
}


@pytest.mark.parametrize("defect", sorted(BAD_KERNEL_HISTORIES))
def test_a_malformed_kernels_history_is_refused_by_resume_and_inspect(run_copy, capsys, defect):
    from minicnn.see.inspect import main as inspect_main

    io.save_npz_atomic(run_copy / "kernels_history.npz", BAD_KERNEL_HISTORIES[defect])
    before = snapshot(run_copy)
    assert "kernels_history.npz" in one_line_exit_2(
        capsys, train_main(["--resume", str(run_copy), "--quiet"])
    )
    assert snapshot(run_copy) == before
    out = run_copy.parent / "inspected"
    assert "kernels_history.npz" in one_line_exit_2(capsys, inspect_main([str(run_copy), "--out", str(out)]))
    assert not out.exists()  # refused at the start: no figure drawn


# --- 5. memory before allocation ----------------------------------------------------------------------


def _architecture_only(path: Path, layers: list[dict]) -> None:
    meta = {"format": "minicnn.Sequential/1", "layers": layers, "frozen": []}
    np.savez(path, __architecture__=np.array(json.dumps(meta)))


def test_a_small_model_file_declaring_huge_layers_is_refused_without_allocating(tmp_path):
    from minicnn.nn.model import Sequential

    path = tmp_path / "model.npz"
    _architecture_only(path, [{"type": "Dense", "in_features": 3000, "out_features": 2800}] * 40)
    assert path.stat().st_size < 20_000
    tracemalloc.start()
    try:
        with pytest.raises(io.FileFormatError, match="missing keys"):
            Sequential.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, f"{peak / 2**20:.1f} MiB"  # the weights would be 1.3 GiB


def test_loading_adopts_the_files_arrays_and_draws_nothing(tmp_path):
    from minicnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, ReLU
    from minicnn.nn.model import Sequential

    model = Sequential(Conv2D(1, 4, 3, rng=0), BatchNorm2D(4), ReLU(), Flatten(), Dense(4 * 6 * 6, 3, rng=1))
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
        assert q.data.flags.writeable and q.data.flags.c_contiguous and q.grad.shape == q.data.shape
        assert q.data.dtype == p.data.dtype and not np.any(q.grad)
    x = np.random.default_rng(2).normal(size=(2, 1, 8, 8)).astype(np.float32)
    with model.evaluating(), loaded.evaluating():
        np.testing.assert_array_equal(model.forward(x), loaded.forward(x))


def test_loading_peaks_at_the_weights_and_their_gradients(tmp_path):
    """Drawing initial weights first would add a float64 draw and its float32 copy (3 times the weights)."""
    from minicnn.nn.layers import Dense
    from minicnn.nn.model import Sequential

    Sequential(Dense(1000, 1000, rng=0)).save(tmp_path / "m.npz")
    weights = 1000 * 1001 * 4
    peak, _ = _peak_while(lambda: Sequential.load(tmp_path / "m.npz"))
    assert peak <= 2.2 * weights, f"peak {peak / weights:.2f} x the weights"


@pytest.mark.parametrize(
    ("layers", "weights", "expected"),
    [
        (
            [{"type": "Dense", "in_features": 2, "out_features": 3}],
            {"0.weight": np.zeros((3, 2))},
            "missing keys",
        ),
        (
            [{"type": "Dense", "in_features": 2, "out_features": 3}],
            {"0.weight": np.zeros((2, 3)), "0.bias": np.zeros(3)},
            "0.weight expected shape (3, 2)",
        ),
        (
            [{"type": "Dense", "in_features": 2, "out_features": 3, "bias": False}],
            {"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(3)},
            "unexpected keys ['0.bias']",
        ),
    ],
)
def test_loading_checks_keys_and_shapes_against_the_architecture(tmp_path, layers, weights, expected):
    from minicnn.nn.model import Sequential

    meta = {"format": "minicnn.Sequential/1", "layers": layers, "frozen": []}
    np.savez(tmp_path / "m.npz", __architecture__=np.array(json.dumps(meta)), **weights)
    with pytest.raises(
        io.FileFormatError,
        match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        Sequential.load(tmp_path / "m.npz")


def test_a_model_above_the_budget_is_refused_before_it_is_built(tmp_path):
    from minicnn.nn.model import Sequential

    layer = {"type": "Dense", "in_features": 200, "out_features": 300}
    weights = {}
    for i in range(3):
        weights.update(
            {f"{i}.weight": np.zeros((300, 200), np.float32), f"{i}.bias": np.zeros(300, np.float32)}
        )
    meta = {"format": "minicnn.Sequential/1", "layers": [layer] * 3, "frozen": []}
    np.savez(tmp_path / "m.npz", __architecture__=np.array(json.dumps(meta)), **weights)
    # the file's arrays (0.7 MB) and each layer (0.7 MB with its float64 draw) fit; the model with its
    # gradients (1.4 MB) does not
    io.set_memory_budget(1_000_000)
    with pytest.raises(io.FileFormatError, match="weights and gradients"):
        Sequential.load(tmp_path / "m.npz")


def _peak_while(read) -> tuple[int, object]:
    tracemalloc.start()
    try:
        result = read()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("compressed", [False, True])
def test_reading_an_npz_peaks_within_1_2_times_its_arrays(tmp_path, compressed):
    arrays = {"X": np.random.default_rng(0).random((500, 1, 64, 64)), "y": np.arange(500)}
    (np.savez_compressed if compressed else np.savez)(tmp_path / "d.npz", **arrays)
    size = sum(a.nbytes for a in arrays.values())
    peak, loaded = _peak_while(lambda: io.load_npz(tmp_path / "d.npz"))
    np.testing.assert_array_equal(loaded["X"], arrays["X"])
    assert peak <= 1.2 * size, f"peak {peak / size:.2f} x the data"


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_reading_an_idx_file_peaks_within_1_2_times_its_array(tmp_path, name):
    from minicnn.data import write_idx
    from minicnn.data.datasets import read_idx

    images = np.random.default_rng(0).integers(0, 255, (10000, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, images)
    peak, loaded = _peak_while(lambda: read_idx(tmp_path / name))
    np.testing.assert_array_equal(loaded, images)
    assert peak <= 1.2 * images.nbytes, f"peak {peak / images.nbytes:.2f} x the data"


def test_reading_safetensors_peaks_within_1_2_times_its_tensors(tmp_path):
    tensors = {"a": np.random.default_rng(0).random((500, 500)), "b": np.arange(1000, dtype=np.int32)}
    io.write_safetensors(tmp_path / "t.safetensors", tensors)
    size = sum(t.nbytes for t in tensors.values())
    peak, (loaded, _) = _peak_while(lambda: io.read_safetensors(tmp_path / "t.safetensors"))
    np.testing.assert_array_equal(loaded["a"], tensors["a"])
    assert peak <= 1.2 * size, f"peak {peak / size:.2f} x the data"


# --- 6. nothing blocks forever ------------------------------------------------------------------------


class _Drip(http.server.BaseHTTPRequestHandler):
    """Announces ``size`` bytes and sends one every ``interval`` seconds."""

    size, interval = 1000, 0.2

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(self.size):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(self.interval)

    def log_message(self, *args):
        pass


class _Loop(http.server.BaseHTTPRequestHandler):
    """Redirects every request to itself."""

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def local_server(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _remote(size=1000):
    from minicnn.data.download import RemoteFile

    return RemoteFile("file.bin", size, "0" * 64, ("http://127.0.0.1:9/file.bin",))


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"deadline_s": 1.0, "min_rate": 0.0}, "not finished after 1 s"),
        ({"deadline_s": 60.0, "min_rate": 100.0, "grace_s": 0.5}, "below the minimum of 100"),
    ],
)
def test_a_dripping_server_hits_the_deadline_or_the_minimum_rate(tmp_path, limits, expected):
    from minicnn.data.download import DownloadError, TransferLimits, fetch

    started = time.monotonic()
    with local_server(_Drip) as url, pytest.raises(DownloadError) as caught:
        fetch(_remote(), tmp_path, base_url=url, progress=False, limits=TransferLimits(**limits))
    assert time.monotonic() - started < 5
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert os.listdir(tmp_path) == []  # the partial file is gone


def test_a_redirect_loop_is_one_line(tmp_path):
    from minicnn.data.download import DownloadError, fetch

    with local_server(_Loop) as url, pytest.raises(DownloadError) as caught:
        fetch(_remote(), tmp_path, base_url=url, progress=False)
    assert "redirect" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("base_url", ["file:///etc", "data:text/plain,x", "ftp://127.0.0.1/", "no scheme"])
def test_base_url_must_be_http_or_https(tmp_path, capsys, base_url):
    argv = QUICK + [
        "--out",
        str(tmp_path / "r"),
        "--set",
        "data.source=mnist",
        "--set",
        f"data.base_url={base_url}",
    ]
    assert "expected an http:// or https:// URL" in one_line_exit_2(capsys, train_main(argv))
    assert not (tmp_path / "r").exists()


def test_a_url_with_a_newline_is_escaped(tmp_path):
    from minicnn.data.download import DownloadError, fetch

    with pytest.raises(DownloadError) as caught:
        fetch(_remote(), tmp_path, base_url="http://127.0.0.1:9/a\nb", progress=False)
    assert "\n" not in str(caught.value) and "a\\nb" in str(caught.value)


def _readers(tmp_path):
    from minicnn.data.datasets import read_idx, read_npz_xy
    from minicnn.nn.model import Sequential
    from minicnn.train.config import load_config

    return {
        "load_npz": io.load_npz,
        "read_safetensors": io.read_safetensors,
        "read_idx": read_idx,
        "read_npz_xy": read_npz_xy,
        "Sequential.load": Sequential.load,
        "Sequential.load safetensors": lambda p: Sequential.load(Path(str(p) + ".safetensors")),
        "load_config": load_config,
        "train.py --config": lambda p: train_main(["--config", str(p), "--out", str(tmp_path / "r")]),
    }


@pytest.mark.parametrize("kind", ["fifo", "folder"])
@pytest.mark.parametrize(
    "reader",
    [
        "load_npz",
        "read_safetensors",
        "read_idx",
        "read_npz_xy",
        "Sequential.load",
        "Sequential.load safetensors",
        "load_config",
        "train.py --config",
    ],
)
def test_every_reader_refuses_a_fifo_or_folder_without_waiting(tmp_path, capsys, reader, kind):
    path = tmp_path / "thing"
    if reader == "Sequential.load safetensors":
        path = tmp_path / "thing.safetensors"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    if reader == "Sequential.load safetensors":
        path = tmp_path / "thing"
    outcome: list = []

    def read():
        try:
            outcome.append(_readers(tmp_path)[reader](path))
        except (ValueError, OSError) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():  # unblock the reader so the thread ends, then fail
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"{reader} blocked on a {kind}")
    (result,) = outcome
    if isinstance(result, int):  # a command: exit 2, one line
        line = one_line_exit_2(capsys, result)
    else:
        line = str(result)
        assert "\n" not in line
    assert ("is a FIFO" if kind == "fifo" else "is a folder") in line, line


# --- 7. one line, the right words ---------------------------------------------------------------------


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_deep_nesting_is_one_line_everywhere(tmp_path, capsys, depth):
    config = tmp_path / "deep.toml"
    config.write_text(f"seed = {_deep(depth)}\n")
    assert "nested too deeply" in one_line_exit_2(capsys, train_main(["--config", str(config)]))
    line = one_line_exit_2(capsys, train_main(QUICK + ["--set", f"train.betas={_deep(depth)}"]))
    assert len(line) < 500
    header = json.dumps({"__metadata__": {}}).encode()[:-1] + b', "x": ' + _deep(depth).encode() + b"}"
    (tmp_path / "t.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(io.FileFormatError, match="nested too deeply"):
        io.read_safetensors(tmp_path / "t.safetensors")


def test_a_deeply_nested_architecture_or_history_is_one_line(run_copy, capsys):
    from minicnn.nn.model import Sequential

    model = io.load_npz(run_copy / "model.npz")
    io.save_npz_atomic(run_copy / "model.npz", {**model, "__architecture__": np.array(_deep(100_000))})
    with pytest.raises(io.FileFormatError, match="nested too deeply"):
        Sequential.load(run_copy / "model.npz")
    _edit_checkpoint(run_copy, lambda state: state.update(history=np.array(_deep(100_000))))
    line = one_line_exit_2(capsys, train_main(["--resume", str(run_copy), "--quiet"]))
    assert "last.npz" in line and "nested too deep" in line


def test_a_deeply_nested_metrics_json_is_one_line_in_explore(run_copy, capsys):
    from minicnn.see.explore import main as explore_main

    (run_copy / "metrics.json").write_text(_deep(100_000))
    assert "metrics.json: JSON nested too deeply" in one_line_exit_2(capsys, explore_main([str(run_copy)]))


@pytest.mark.parametrize(
    ("model_section", "override"),
    [
        ("model = 5\n", "model.layers.0.out_channels=3"),
        ("model = 5\n", "model.dtype=float64"),
        ("[model]\nlayers = [1]\n", "model.layers.0.out_channels=3"),
        ("[model]\nlayers = [1]\n", "model.dtype=float64"),
        ("[model]\nlayers = 3\n", "model.layers.0.type=Dense"),
    ],
)
def test_set_on_a_malformed_model_section_is_one_line(tmp_path, capsys, model_section, override):
    config = tmp_path / "c.toml"
    config.write_text(model_section + "[train]\nepochs = 1\n")
    line = one_line_exit_2(
        capsys, train_main(["--config", str(config), "--set", override, "--out", str(tmp_path / "r")])
    )
    assert "model" in line
    assert not (tmp_path / "r").exists()


def _list_settings() -> list[str]:
    import dataclasses
    import typing

    from minicnn.train.config import Config

    keys = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            elif typing.get_origin(hints[f.name]) is tuple and typing.get_args(hints[f.name]):
                keys.append((f"{prefix}{f.name}", len(typing.get_args(hints[f.name]))))

    walk(Config, "")
    return keys


LIST_SETTINGS = _list_settings()


def test_there_are_list_settings_to_check():
    assert ("train.betas", 2) in LIST_SETTINGS


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    setting=st.sampled_from(LIST_SETTINGS),
    bad=st.sampled_from(["nan", "inf", "-inf"]),
    position=st.integers(0, 7),
)
def test_nan_or_inf_in_any_list_setting_is_refused_naming_the_key(tmp_path, capsys, setting, bad, position):
    key, length = setting
    values = ["0.5"] * length
    values[position % length] = bad
    out = tmp_path / f"r-{key}-{bad}-{position}"
    line = one_line_exit_2(
        capsys, train_main(QUICK + ["--set", f"{key}=[{', '.join(values)}]", "--out", str(out)])
    )
    assert key in line and "finite" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("mean", "std"),
    [
        (np.array([np.nan], np.float32), np.ones(1, np.float32)),
        (np.zeros(1, np.float32), np.zeros(1, np.float32)),
    ],
)
def test_export_refuses_a_split_with_nan_mean_or_zero_std_as_explore_does(
    run_copy, tmp_path, capsys, mean, std
):
    pytest.importorskip("onnx")
    from minicnn.export import main as export_main
    from minicnn.see.explore import main as explore_main

    split = io.load_npz(run_copy / "split.npz")
    io.save_npz_atomic(run_copy / "split.npz", {**split, "mean": mean, "std": std})
    line = one_line_exit_2(capsys, export_main([str(run_copy), "--onnx", str(tmp_path / "m.onnx")]))
    assert "split.npz: expected finite numbers 'mean' and 'std'" in line
    explore_line = one_line_exit_2(capsys, explore_main([str(run_copy)]))
    assert "split.npz: expected finite numbers 'mean' and 'std'" in explore_line
    assert not (tmp_path / "m.onnx").exists()


def test_resume_of_a_folder_checkpoint_says_folder(run_copy, capsys):
    (run_copy / "last.npz").unlink()
    (run_copy / "last.npz").mkdir()
    assert "last.npz is a folder" in one_line_exit_2(capsys, train_main(["--resume", str(run_copy)]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("standardize", [True, False])
def test_the_estimator_says_inputs_near_1e300_overflow(dtype, standardize):
    from minicnn.sklearn import CNNClassifier

    X = np.random.default_rng(0).uniform(0.5, 1.0, (20, 1, 8, 8)) * 1e300
    y = np.arange(20) % 2
    # float32: scikit-learn's own check already says the values are too large for the dtype
    with pytest.raises(ValueError, match="the inputs overflow|too large for dtype") as caught:
        CNNClassifier(epochs=1, dtype=dtype, standardize=standardize).fit(X, y)
    assert "learning rate" not in str(caught.value) and "lr" not in str(caught.value)
