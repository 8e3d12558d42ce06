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
import os
import signal
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np

from ..errors import one_line_errors
from ..io import read_regular_bytes, show_path, write_text_atomic
from ..nn.layers import BUILTIN_JAVASCRIPT, IMPORT_HELP, Conv2D, Layer, import_layer_modules
from ..nn.model import Sequential

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
    from ..train.rundir import load_standardization

    return load_standardization(run_dir / "split.npz", channels)


def _source(run_dir: Path) -> str:
    if not (run_dir / "config.toml").exists():
        return "digits"
    from ..train.config import load_config

    return load_config(run_dir / "config.toml").data.source


def _metrics(run_dir: Path) -> dict:
    """The page's numbers from ``metrics.json`` ({} when there is none); ValueError naming the file
    when it is not a regular file holding a JSON object."""
    path = run_dir / "metrics.json"
    if not os.path.lexists(path):
        return {}
    try:
        metrics = json.loads(read_regular_bytes(path, "metrics.json file"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{show_path(path)}: not JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{show_path(path)}: JSON nested too deeply") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{show_path(path)}: expected a JSON object, got {type(metrics).__name__}")
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


def layer_record(name: str, layer: Layer, input_shape: tuple, output_shape: tuple) -> dict:
    """One layer as the page needs it: type, constructor arguments, shapes (without N) and weights
    (its own and its children's, under their dotted names)."""
    record: dict = {
        "type": type(layer).__name__,
        "path": name,
        "name": f"{name}: {layer._label()}",
        "config": {k: v for k, v in layer.get_config().items() if not _holds_layers(v)},
        "input_shape": list(input_shape[1:]),
        "output_shape": list(output_shape[1:]),
    }
    if isinstance(layer, Conv2D):
        (top, bottom), (left, right) = layer.pad_amounts
        record["pad"] = [top, bottom, left, right]  # "same" resolved here, as minicnn resolves it
    if layer.javascript != BUILTIN_JAVASCRIPT:
        record["javascript"] = layer.javascript
    params = {key: _array(p.data) for key, p in layer.named_parameters()}
    params.update({key: _array(buffer) for key, buffer in layer.buffers().items()})
    record["params"] = params
    return record


def _holds_layers(value) -> bool:
    """A config value that is a child layer (or a list of them): the page gets their weights, not them."""
    return isinstance(value, Layer) or (
        isinstance(value, (list, tuple)) and any(isinstance(v, Layer) for v in value)
    )


class PageGraph:
    """The model as the page runs it: a list of layer records, each reading activations by index
    (0 is the input; record ``k`` writes activation ``k + 1``). Layers add themselves through their
    ``page_graph`` method (containers add their layers; a Residual adds its sum). The first layer the
    page cannot run (no JavaScript forward pass, or an input it refuses) ends the graph; ``problem``
    says why, and the layers before it are still drawn."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.problem: str | None = None

    def add_layer(self, name: str, layer: Layer, source: int, x: np.ndarray) -> tuple[int, np.ndarray]:
        if self.problem is not None:
            return source, x
        if layer.javascript is None:
            self.problem = (
                f"layer {name} ({type(layer).__name__}) has no JavaScript forward pass for the page "
                f"(give {type(layer).__name__} a 'javascript' attribute; see the docs, 'Your own layer')"
            )
            return source, x
        try:
            y = layer.forward(x)
        except (ValueError, TypeError) as exc:
            self.problem = f"layer {name} does not accept the run's inputs {tuple(x.shape[1:])}: {exc}"
            return source, x
        return self._append(layer_record(name, layer, x.shape, y.shape), [source], y)

    def add_sum(self, name: str, layer: Layer, sources, y: np.ndarray) -> tuple[int, np.ndarray]:
        """A block's sum of two activations (a Residual's body and shortcut); the record has no weights."""
        if self.problem is not None:
            return sources[0], y
        record = {
            "type": type(layer).__name__,
            "path": name,
            "name": f"{name}: {type(layer).__name__}, body + shortcut",
            "config": {},
            "input_shape": list(y.shape[1:]),
            "output_shape": list(y.shape[1:]),
            "params": {},
        }
        return self._append(record, list(sources), y)

    def _append(self, record: dict, sources: list[int], y: np.ndarray) -> tuple[int, np.ndarray]:
        record["inputs"] = sources
        self.records.append(record)
        return len(self.records), y


def describe_model(model: Sequential, input_shape: tuple) -> tuple[list[dict], str | None]:
    """Layer records for an input of ``input_shape`` (C, H, W), and why the page cannot draw all of
    the model (None when it can)."""
    x = np.zeros((1,) + tuple(input_shape), dtype=np.float32)
    graph = PageGraph()
    with model.evaluating():
        _, out = model.page_graph(graph, "", 0, x)
    if graph.problem is None and out.ndim != 2:
        return graph.records, (
            f"the model's output has shape {tuple(out.shape[1:])} per image; the page draws models "
            "that end in one score per class (add Flatten and Dense)"
        )
    return graph.records, graph.problem


def init_kernels(run: Run, records: list[dict]) -> dict:
    """``{position in the page's layer list: initial kernels (out, in, kh, kw)}`` for each Conv2D of
    ``init.npz`` whose shape matches the trained one."""
    if run.init_model is None:
        return {}
    kernels = {}
    for i, record in enumerate(records):
        if record["type"] != "Conv2D":
            continue
        try:
            old = run.init_model.get_layer(record["path"])
        except KeyError:
            continue
        if isinstance(old, Conv2D) and list(old.weight.shape) == record["params"]["weight"]["shape"]:
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
        "init_kernels": init_kernels(run, layers),
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


def write_page(run_dir, out=None, warn=None) -> Path:
    """Write the explorer page for ``run_dir`` to ``out`` (default ``RUN_DIR/explore.html``); returns
    the path. ``warn(message)`` is called when the page can draw the model only in part."""
    data = page_data(load_run(run_dir))
    if data["unsupported"] and warn is not None:
        warn(f"the page draws this model only in part: {data['unsupported']}")
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
    """An HTTP server on 127.0.0.1 (``port`` 0: any free port) that serves the page at ``path`` and
    nothing else.

    ``GET /<page name>`` answers the page as it was when the server started; every other path is 404
    (no listing, no other file of the folder, no run files). Requests whose ``Host`` is not
    ``127.0.0.1:PORT`` or ``localhost:PORT`` are refused with 421, so a page on another site cannot
    reach the server through DNS rebinding. A client that disconnects mid-answer is ignored quietly.
    """
    page = read_regular_bytes(path)
    handler = partial(_PageHandler, page=page, route="/" + urllib.parse.quote(Path(path).name))
    return _QuietServer(("127.0.0.1", port), handler)


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client gone mid-answer is no error
            super().handle_error(request, client_address)


class _PageHandler(http.server.BaseHTTPRequestHandler):
    """Answers one route with one page (see :func:`make_server`)."""

    def __init__(self, *args, page: bytes, route: str, **kwargs) -> None:
        self.page, self.route = page, route
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        port = cast(tuple, self.server.server_address)[1]
        if self.headers.get("Host", "") not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            status, body, kind = 421, b"wrong Host header\n", "text/plain; charset=utf-8"
        elif urllib.parse.urlsplit(self.path).path != self.route:
            status, body, kind = 404, b"not found\n", "text/plain; charset=utf-8"
        else:
            status, body, kind = 200, self.page, "text/html; charset=utf-8"
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        except ConnectionError:
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # the terminal shows the address once; a line per request would bury it


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
    parser.add_argument("--import", dest="imports", action="append", metavar="MODULE", help=IMPORT_HELP)
    parser.add_argument("--out", default=None, help="the page to write (default RUN_DIR/explore.html)")
    parser.add_argument(
        "--serve", action="store_true", help="also serve the page on 127.0.0.1 with Python's http.server"
    )
    parser.add_argument("--port", type=int, default=0, help="port for --serve (default: any free port)")
    args = parser.parse_args(argv)
    import_layer_modules(args.imports)
    if not 0 <= args.port <= 65535:
        print(f"error: --port {args.port}: expected a port number from 0 to 65535", file=sys.stderr)
        return 2
    path = write_page(
        args.run_dir, args.out, warn=lambda message: print(f"warning: {message}", file=sys.stderr)
    )
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
