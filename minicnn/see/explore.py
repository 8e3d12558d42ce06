"""Explore a trained model in the browser: ``python -m minicnn.explore RUN_DIR [--out FILE] [--serve]``.

Writes one self-contained HTML page (default ``RUN_DIR/explore.html``): the model's architecture and
weights as JSON inside the page, and plain JavaScript (:file:`explore.js`, no build step, no network
access) that runs the model's forward pass in the browser. On the page one can

- draw a digit on a canvas; the drawing becomes the model's input the way the data was made (a bitmap
  four times the input's size, counted in 4x4 blocks to values 0 to 16, as UCI built the 8x8 digits;
  divided by 16 and standardized with the run's mean and std from ``split.npz``), or pick a test image;
- watch the ten probabilities, and every layer's feature maps (one heat map per channel);
- click a feature-map cell of a convolution to see the kernel, the input patch under it, their
  element-wise products, the sum and the bias;
- compare each convolution's kernels before (``init.npz``) and after training, with the angle between them;
- see an occlusion map: how much the predicted class's probability drops when a patch is blanked.

The page checks its own forward pass on load: its logits for a few test images must equal the logits
minicnn computed (embedded in the page) within 1e-4 relative (:data:`CHECK_RTOL`).
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import sys
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import one_line_errors
from ..io import load_npz, write_text_atomic
from ..nn.layers import Conv2D, Layer
from ..nn.model import Sequential

#: Layer types the page's JavaScript forward pass implements.
DRAWABLE = (
    "Conv2D",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "Flatten",
    "Dense",
    "Dropout",
    "BatchNorm2D",
)
#: Largest relative difference (max |js - minicnn| / max |minicnn|) the page's self-check accepts.
CHECK_RTOL = 1e-4
#: How many test images the page shows (and checks its forward pass on).
N_IMAGES = 12
_ASSETS = Path(__file__).resolve().parent


@dataclass
class Run:
    """What the page needs from a run directory.

    Attributes
    ----------
    model, init_model : Sequential (``init_model`` is None when ``init.npz`` is missing)
    X_test : float32 array of shape (N, C, H, W), standardized as the model saw it
    y_test : int64 array of shape (N,)
    mean, std : float32 arrays of shape (C,): the standardization of the training split
    source : the data source (``"digits"``, ``"idx"`` or ``"npz"``)
    metrics : the contents of ``metrics.json`` (empty when missing)
    """

    name: str
    model: Sequential
    init_model: Sequential | None
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    source: str
    metrics: dict


def load_run(run_dir) -> Run:
    """Read ``model.npz``, ``init.npz``, ``split.npz``, ``metrics.json`` and the test split of a run.

    Raises FileNotFoundError for a folder that is not a run directory and ValueError for a broken file.
    """
    from ..data import DataError
    from .inspect import load_test_split

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"RUN_DIR {run_dir} is not a directory; expected a run directory written by train.py"
        )
    if not (run_dir / "model.npz").is_file():
        raise FileNotFoundError(f"{run_dir} has no model.npz; is it a run directory written by train.py?")
    model = Sequential.load(run_dir / "model.npz")
    init_model = Sequential.load(run_dir / "init.npz") if (run_dir / "init.npz").is_file() else None
    try:
        X_test, y_test = load_test_split(run_dir)
    except DataError as exc:
        raise ValueError(f"cannot rebuild the run's test split: {exc}") from None
    mean, std = _standardization(run_dir, X_test.shape[1])
    return Run(
        run_dir.resolve().name,
        model,
        init_model,
        X_test,
        y_test,
        mean,
        std,
        _source(run_dir),
        _metrics(run_dir),
    )


def _standardization(run_dir: Path, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel ``mean`` and ``std`` the run standardized with (0 and 1 without ``split.npz``)."""
    if not (run_dir / "split.npz").is_file():
        return np.zeros(channels, np.float32), np.ones(channels, np.float32)
    split = load_npz(run_dir / "split.npz")
    mean, std = (np.asarray(split.get(k, np.zeros(0))).ravel() for k in ("mean", "std"))
    numbers = mean.dtype.kind in "biuf" and std.dtype.kind in "biuf"
    mean, std = (a.astype(np.float32) if numbers else np.zeros(0, np.float32) for a in (mean, std))
    if (
        mean.shape != (channels,)
        or std.shape != (channels,)
        or not np.all(np.isfinite(mean))
        or not np.all(np.isfinite(std) & (std > 0))
    ):
        raise ValueError(
            f"{run_dir / 'split.npz'}: expected finite numbers 'mean' and 'std' of shape "
            f"({channels},) with std > 0, got shapes {mean.shape} and {std.shape}"
        )
    return mean, std


def _source(run_dir: Path) -> str:
    if not (run_dir / "config.toml").exists():
        return "digits"
    from ..train.config import load_config

    return load_config(run_dir / "config.toml").data.source


def _metrics(run_dir: Path) -> dict:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    return {
        k: metrics[k]
        for k in ("test_accuracy", "best_epoch", "epochs_run")
        if isinstance(metrics.get(k), (int, float)) and not isinstance(metrics.get(k), bool)
    }


# ----------------------------------------------------------------------------------------------
# The page's data
# ----------------------------------------------------------------------------------------------


def _array(values) -> dict:
    """An array as JSON: ``{"shape": [...], "data": [flat values in C order]}`` (exact float32 values)."""
    values = np.asarray(values)
    return {"shape": list(values.shape), "data": values.astype(np.float64).ravel().tolist()}


def leaf_layers(model: Sequential, prefix: str = "") -> list[tuple[str, Layer]]:
    """The model's layers in the order they run, nested Sequentials opened, each with PyTorch's name
    (``"0"``, ``"3.1"``)."""
    leaves: list[tuple[str, Layer]] = []
    for i, layer in enumerate(model.layers):
        name = f"{prefix}{i}"
        leaves += leaf_layers(layer, name + ".") if isinstance(layer, Sequential) else [(name, layer)]
    return leaves


def layer_record(name: str, layer, input_shape: tuple, output_shape: tuple) -> dict:
    """One layer as the page needs it: type, constructor arguments, shapes (without N) and weights."""
    kind = type(layer).__name__
    record = {
        "type": kind,
        "name": f"{name}: {layer!r}",
        "config": layer.get_config(),
        "input_shape": list(input_shape[1:]),
        "output_shape": list(output_shape[1:]),
    }
    if isinstance(layer, Conv2D):
        (top, bottom), (left, right) = layer.pad_amounts
        record["pad"] = [top, bottom, left, right]  # "same" resolved here, as minicnn resolves it
    params = {key: _array(p.data) for key, p in layer.named_parameters()}
    params.update({key: _array(buffer) for key, buffer in layer.buffers().items()})
    record["params"] = params
    return record


def describe_model(model: Sequential, input_shape: tuple) -> tuple[list[dict], str | None]:
    """Layer records for an input of ``input_shape`` (C, H, W), and why the page cannot draw the model
    (None when it can)."""
    x = np.zeros((1,) + tuple(input_shape), dtype=np.float32)
    records: list[dict] = []
    with model.evaluating():
        for name, layer in leaf_layers(model):
            kind = type(layer).__name__
            if kind not in DRAWABLE:
                return records, (
                    f"layer {name} is a {kind}, which the page has no JavaScript forward pass for "
                    f"(it draws {', '.join(DRAWABLE)})"
                )
            try:
                y = layer.forward(x)
            except (ValueError, TypeError) as exc:
                return records, f"layer {name} does not accept the run's inputs {tuple(input_shape)}: {exc}"
            records.append(layer_record(name, layer, x.shape, y.shape))
            x = y
    if x.ndim != 2:
        return records, (
            f"the model's output has shape {tuple(x.shape[1:])} per image; the page draws models "
            "that end in one score per class (add Flatten and Dense)"
        )
    return records, None


def init_kernels(run: Run) -> dict:
    """``{position in the page's layer list: initial kernels (out, in, kh, kw)}`` for each Conv2D of
    ``init.npz`` whose shape matches the trained one."""
    if run.init_model is None:
        return {}
    before, after = leaf_layers(run.init_model), leaf_layers(run.model)
    if [name for name, _ in before] != [name for name, _ in after]:
        return {}
    kernels = {}
    for i, ((_, old), (_, new)) in enumerate(zip(before, after)):
        if isinstance(old, Conv2D) and isinstance(new, Conv2D) and old.weight.shape == new.weight.shape:
            kernels[str(i)] = _array(old.weight.data)
    return kernels


def pick_images(y_test: np.ndarray, count: int = N_IMAGES) -> np.ndarray:
    """Indices of up to ``count`` test images: the first of each class in class order, then the next ones."""
    first = [int(np.flatnonzero(y_test == k)[0]) for k in np.unique(y_test)]
    taken = set(first)
    rest = [i for i in range(min(len(y_test), 2 * count + len(first))) if i not in taken]
    return np.array((first + rest)[:count], dtype=np.int64)


def page_data(run: Run) -> dict:
    """Everything the page shows, as a JSON-friendly dict (the ``minicnn-data`` block of the page)."""
    input_shape = tuple(run.X_test.shape[1:])
    layers, reason = describe_model(run.model, input_shape)
    picked = pick_images(run.y_test) if len(run.y_test) else np.zeros(0, np.int64)
    images = run.X_test[picked]
    data = {
        "run": run.name,
        "source": run.source,
        "metrics": run.metrics,
        "input_shape": list(input_shape),
        "mean": run.mean.tolist(),
        "std": run.std.tolist(),
        "layers": layers,
        "unsupported": reason,
        "init_kernels": init_kernels(run),
        "check_rtol": CHECK_RTOL,
        "images": [
            {"index": int(i), "label": int(run.y_test[i]), "input": _array(x)} for i, x in zip(picked, images)
        ],
    }
    if reason is None and len(images):
        logits = run.model.predict_logits(images)  # what Sequential.predict_proba takes the softmax of
        data["check"] = {
            "logits": logits.astype(np.float64).tolist(),
            "probabilities": run.model.predict_proba(images).astype(np.float64).tolist(),
        }
    return data


def render_page(data: dict) -> str:
    """The HTML page: the template with the stylesheet, the script and ``data`` (JSON) put inline."""
    template = (_ASSETS / "explore_template.html").read_text(encoding="utf-8")
    # "<" never occurs outside JSON strings, and \u003c inside one keeps "</script>" out of the page
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    title = f"minicnn explorer: {data['run']}".replace("&", "&amp;").replace("<", "&lt;")
    parts = {
        "TITLE": title,
        "STYLE": (_ASSETS / "explore.css").read_text(encoding="utf-8"),
        "SCRIPT": (_ASSETS / "explore.js").read_text(encoding="utf-8"),
        "DATA": payload,
    }
    for key, value in parts.items():
        template = template.replace(f"/*@{key}@*/", value)
    return template


def write_page(run_dir, out=None, stream=None) -> Path:
    """Write the explorer page for ``run_dir`` to ``out`` (default ``RUN_DIR/explore.html``); returns
    the path. When the page cannot draw the model, it still shows why, and a warning saying so goes
    to ``stream`` (default stderr)."""
    data = page_data(load_run(run_dir))
    if data["unsupported"]:
        print(
            f"warning: the page cannot draw this model, it only says why: {data['unsupported']}",
            file=sys.stderr if stream is None else stream,
        )
    page = render_page(data)
    out = Path(run_dir) / "explore.html" if out is None else Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; expected the path of an .html file to write")
    try:
        write_text_atomic(out, page)
    except OSError as exc:
        raise ValueError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    return out


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def make_server(path: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 (``port`` 0: any free port) serving the folder that holds ``path``."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(Path(path).resolve().parent))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(path: Path, port: int = 0, stream=None) -> None:
    """Serve the page until Ctrl-C (SIGINT) or SIGTERM, after printing its address.

    Both signals stop it cleanly, also where SIGINT came in ignored (a process started in the
    background of a script inherits that, and Python then never raises KeyboardInterrupt).
    """
    stream = sys.stdout if stream is None else stream
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    stops = (signal.SIGINT, signal.SIGTERM) if main_thread else ()
    previous = {number: signal.signal(number, _interrupt) for number in stops}
    try:
        with make_server(path, port) as server:
            host, bound = server.server_address[:2]
            print(
                f"serving http://{host!s}:{bound}/{Path(path).name} (Ctrl-C stops)", file=stream, flush=True
            )
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@one_line_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minicnn.explore",
        description="Write a self-contained HTML page to explore a trained model: "
        "draw an input, watch every feature map and the prediction.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train.py")
    parser.add_argument("--out", default=None, help="the page to write (default RUN_DIR/explore.html)")
    parser.add_argument(
        "--serve", action="store_true", help="also serve the page on 127.0.0.1 with Python's http.server"
    )
    parser.add_argument("--port", type=int, default=0, help="port for --serve (default: any free port)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"error: --port {args.port}: expected a port number from 0 to 65535", file=sys.stderr)
        return 2
    path = write_page(args.run_dir, args.out)
    print(f"wrote {path}")
    if args.serve:
        try:
            serve(path, args.port)
        except OSError as exc:
            print(f"error: cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
