"""Containers: layers made of layers. :class:`Sequential` runs its layers in order (and is the model
class: prediction, summary, files); :class:`Residual` adds a shortcut around a body (He et al. 2016).

Both are plain :class:`~minicnn.nn.layers.base.Layer` subclasses: their children, parameters and
state are found the way every layer's are, so a block of your own that holds a ``Sequential`` works
the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import _threads
from .._backend import asarray_like, host_dtype, to_host
from .activation import ReLU
from .base import BUILTIN_JAVASCRIPT, Layer, layer_record, no_grad
from .pooling import MaxPool2D
from .saving import ClassOnly, layers_from_records, load_model, save_model


class Sequential(Layer):
    """A stack of layers: ``Sequential(Conv2D(...), ReLU(), ...)`` or ``Sequential([layers])``.

    A Sequential is itself a :class:`~minicnn.nn.layers.Layer`, so models nest (``Sequential(block,
    block, Flatten(), Dense(...))``) and follow the same contract: ``output_shape``, ``forward``,
    ``backward``, ``parameters``, ``train`` / ``eval`` / ``evaluating``.

    ``forward`` runs the layers in the order listed, except that a ReLU right before a MaxPool2D runs
    after it (the same results, on a quarter of the pixels; :meth:`_order`).

    Attributes
    ----------
    layers : list of Layer
        ``model.layers[0].weight.data`` are the first convolution's kernels, (out, in, kh, kw).
    """

    def __init__(self, *layers) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a minicnn Layer")
        self.layers: list[Layer] = list(layers)
        self.training = True
        self._out_shape: tuple[int, ...] | None = None  # the last forward's output shape, for backward
        self._run: list[Layer] = self.layers  # the order the last forward ran the layers in (_order)

    def named_children(self) -> list[tuple[str, Layer]]:
        """``[("0", layer), ("1", layer), ...]``: PyTorch's names for a Sequential's layers."""
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    # --- computing -------------------------------------------------------------------------------
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape after every layer, inferred layer by layer through their ``output_shape``."""
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def check_input(self, x):
        return x  # each layer checks its own input

    def forward(self, x: np.ndarray) -> np.ndarray:
        order = self._order()
        with _threads.single_threaded_blas():  # the layers share the cores out themselves
            for layer in order:
                x = layer.forward(x)
        self._out_shape, self._run = tuple(x.shape), order
        return x

    def _order(self) -> list[Layer]:
        """The layers in the order they run: as listed, except that a ReLU followed by a MaxPool2D
        runs after it. The two commute exactly (max pooling picks the same value and the same
        pixel either way, and ReLU keeps the order of values), and ReLU then touches a quarter of
        the pixels (2x2 pooling): a training step of the MNIST network of
        ``benchmarks/bench_train.py`` took 6 to 11% less time. Backward runs the same order in
        reverse, so every layer gets back the shapes it saw; for finite values the gradients are
        the same, up to the sign of zeros."""
        order = list(self.layers)
        for i in range(len(order) - 1):
            if type(order[i]) is ReLU and type(order[i + 1]) is MaxPool2D:
                order[i], order[i + 1] = order[i + 1], order[i]
        return order

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate d loss / d output through every layer; parameter gradients accumulate.

        With ``need_input_grad=False`` the first layer is told it may skip its input gradient (a
        training step never needs it), and None is returned.
        """
        grad: np.ndarray | None = self._check_grad(grad_out, self._cached(self._out_shape))
        order = self._run  # the order of the last forward (see _order)
        with _threads.single_threaded_blas():
            for i in range(len(order) - 1, -1, -1):
                assert grad is not None  # every layer after the first was asked for its input gradient
                grad = order[i].backward(grad, need_input_grad=need_input_grad or i > 0)
        return grad if need_input_grad else None

    def predict_proba(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Softmax of the outputs in eval mode, in batches; the previous mode is restored.

        X : (N, C, H, W) -> (N, K).
        """
        from ..functional import softmax

        return softmax(self.predict_logits(X, batch_size))

    def predict(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Index of the largest output, (N,), computed in eval mode in batches."""
        return self.predict_logits(X, batch_size).argmax(axis=1)

    def predict_logits(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's outputs in eval mode, computed in batches; the previous mode is restored.

        X : (N, C, H, W) -> (N, K). Besides an ndarray, ``X`` may be any array-like with ``shape``
        whose slices are ndarrays (uint8-backed :class:`minicnn.data.Images`: floats per batch).
        Each batch goes to the device the model is on (:meth:`to`); the outputs come back to the host,
        a NumPy array.
        """
        if not isinstance(X, np.ndarray) and not all(
            hasattr(X, a) for a in ("shape", "__getitem__", "__len__")
        ):
            raise TypeError(
                "Sequential.predict: expected a numpy.ndarray (or minicnn.data.Images), "
                f"got {type(X).__name__}"
            )
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"Sequential.predict: batch_size must be a positive int, got {batch_size!r}")
        where = next((p.data for p in self.parameters()), np.empty(0))  # an array on the model's device
        with self.evaluating(), no_grad():
            chunks = [
                to_host(self.forward(asarray_like(X[i : i + batch_size], where)))
                for i in range(0, len(X), batch_size)
            ]
        if not chunks:  # an empty batch: empty results of the right width
            return np.zeros((0,) + self.output_shape(X.shape)[1:], dtype=self._dtype())
        return np.concatenate(chunks)

    def _dtype(self) -> np.dtype:
        return next((host_dtype(p.data) for p in self.parameters()), np.dtype(np.float32))

    # --- what tools ask ----------------------------------------------------------------------------
    def child_input_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        shapes, shape = {}, tuple(input_shape)
        for name, layer in self.named_children():
            shapes[name] = shape
            shape = layer.output_shape(shape)
        return shapes

    def grid(self, grid: tuple[float, float]) -> tuple[float, float]:
        for layer in self.layers:
            grid = layer.grid(grid)
        return grid

    def child_input(self, child: Layer, x: np.ndarray) -> np.ndarray:
        """The output of the layers before ``child``, run in the order listed."""
        for layer in self.layers:
            if layer is child:
                return x
            x = layer.forward(x)
        raise ValueError(f"{child!r} is not a layer of this Sequential")

    def child_input_grid(self, child: Layer, grid: tuple[float, float]) -> tuple[float, float]:
        for layer in self.layers:
            if layer is child:
                return grid
            grid = layer.grid(grid)
        raise ValueError(f"{child!r} is not a layer of this Sequential")

    def scratch_bytes(self, input_shape, batch_size: int, itemsize: int = 4) -> int:
        shape, total = tuple(input_shape), 0
        for layer in self.layers:
            total += layer.training_bytes(shape, batch_size, itemsize)
            shape = layer.output_shape(shape)
        return total

    def to_onnx(self, graph, name: str) -> None:
        for i, layer in enumerate(self.layers):
            layer.to_onnx(graph, f"{name}.{i}" if name else str(i))

    def page_graph(self, page, name: str, source: int, x: np.ndarray) -> tuple[int, np.ndarray]:
        for i, layer in enumerate(self.layers):
            source, x = layer.page_graph(page, f"{name}.{i}" if name else str(i), source, x)
        return source, x

    # --- description --------------------------------------------------------------------------------
    def summary(self, input_shape) -> str:
        """A table of layers, output shapes and parameter counts for inputs of ``input_shape``
        (C, H, W) or (N, C, H, W), like Keras's ``model.summary()``; the layers inside a block are
        indented under it, and a block's count is the sum of its layers'. Shapes come from each
        layer's ``output_shape``; nothing is computed."""
        shape = tuple(input_shape)
        if len(shape) in (1, 3):
            shape = (1,) + shape
        rows = [("Layer", "Output shape", "Params")]
        for name, layer in self.named_children():
            rows += _summary_rows(layer, name, self.child_input_shapes(shape)[name], 0)
        widths = [max(len(r[k]) for r in rows) for k in range(3)]
        line = "-" * (sum(widths) + 4)

        def fmt(r: tuple[str, str, str]) -> str:
            return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"

        total = sum(p.size for p in self.parameters())
        trainable = sum(p.size for p in self.parameters() if p.requires_grad)
        body = [fmt(rows[0]), line] + [fmt(r) for r in rows[1:]] + [line]
        body += [
            f"Input shape: {(None,) + shape[1:]}".replace("None", "N"),
            f"Total params: {total:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
        ]
        return "\n".join(body)

    def _label(self) -> str:
        return f"Sequential(<{len(self.layers)} layers>)"

    def __repr__(self) -> str:
        inner = "".join(
            f"\n  ({i}): " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self.layers)
        )
        return f"Sequential({inner}\n)"

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def architecture(self) -> list[dict]:
        """The layers as ``[{"type": "Conv2D", ...constructor arguments}]`` (JSON-friendly); a nested
        layer is a record of its own (``{"type": "Sequential", "layers": [...]}``), and a layer of your
        own is named ``"package.module:ClassName"``."""
        return [layer_record(layer) for layer in self.layers]

    def get_config(self) -> dict:
        return {"layers": list(self.layers)}

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        return cls(config.get("layers", []))

    def extra_repr(self) -> str:
        return ", ".join(repr(layer) for layer in self.layers)

    @classmethod
    def from_architecture(cls, spec: list[dict]) -> Sequential:
        """Build a model from :meth:`architecture`'s output (weights freshly initialized). Never
        imports: every layer class must be known (minicnn's own, or defined by a module imported before)."""
        return cls(layers_from_records(spec))

    # --- files -------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the architecture (JSON) and every weight and buffer to a ``.npz`` file, or for a
        ``.safetensors`` name to a safetensors file (PyTorch's keys and layouts; the architecture in
        the header's ``__metadata__``), which ``safetensors.torch.load_file`` reads as a state dict.

        ``.npz`` is appended when ``path`` ends with neither, as ``np.savez`` does
        (``model.save("digits")`` writes ``digits.npz``); the path written is returned. The write is
        atomic: a temporary file in the same folder, then a rename, so an interrupted save never
        replaces a good file with a broken one. A model that could not be loaded back (a layer of
        your own whose ``get_config`` does not rebuild it, a class defined inside a function) is
        refused with a ValueError before anything is written.
        """
        return save_model(self, path)

    @ClassOnly
    def load(cls, path) -> Sequential:
        """Rebuild a model saved by :meth:`save` (``.npz`` or ``.safetensors``):
        ``model = Sequential.load("digits.npz")``.

        Called on the class only: ``model.load(path)`` raises TypeError (it cannot change ``model``;
        to load weights into an existing model use ``model.load_state_dict(...)``). Never unpickles
        and never imports: a layer class of your own must be known first (import its module).

        Every malformed input (a foreign file, a wrong JSON type, deep nesting, complex or non-finite
        weights, missing or extra arrays, shapes that disagree, layers above the memory budget, an
        unknown layer class) raises :class:`minicnn.io.FileFormatError`, a ValueError that names the file.
        """
        return load_model(cls, path)


def _summary_rows(layer: Layer, name: str, shape, depth: int) -> list[tuple[str, str, str]]:
    """The summary's row for ``layer`` (named ``name``, input ``shape`` or None when unknown), then
    its children's rows, indented."""
    count = sum(p.size for p in layer.parameters())
    label = type(layer).__name__ if layer.children() else repr(layer)
    out = "-" if shape is None else str((None,) + tuple(layer.output_shape(shape)[1:])).replace("None", "N")
    rows = [(f"{'  ' * depth}{name}: {label}", out, f"{count:,}")]
    inputs = layer.child_input_shapes(shape) if shape is not None else None
    for child_name, child in layer.named_children():
        child_shape = None if inputs is None else inputs.get(child_name)
        rows += _summary_rows(child, child_name, child_shape, depth + 1)
    return rows


def _as_layer(value, owner: str, name: str) -> Layer:
    if isinstance(value, Layer):
        return value
    if isinstance(value, (list, tuple)):
        return Sequential(list(value))
    raise TypeError(f"{owner}: {name} must be a Layer or a list of layers, got {type(value).__name__}")


class Residual(Layer):
    """``body(x) + shortcut(x)``: a residual block (He et al. 2016, "Deep Residual Learning").

    Parameters
    ----------
    body : Layer or list of Layer (a list becomes a :class:`Sequential`)
    shortcut : Layer, list of Layer, or None
        None (the default) is the identity: the block adds its input to the body's output, so the
        body must keep the shape. Where the body changes it (a stride, more channels), give a shortcut
        that changes it the same way, e.g. ``[Conv2D(c_in, c_out, 1, stride=2), BatchNorm2D(c_out)]``.

    Notes
    -----
    Backward sends the output gradient down both branches and adds what comes back. Parameter
    names are PyTorch's for a module with ``body`` and ``shortcut`` attributes: ``"3.body.0.weight"``,
    ``"3.shortcut.0.weight"``.

    Shapes: (N, C, H, W) -> the body's output shape, which the shortcut's must equal.
    """

    javascript = BUILTIN_JAVASCRIPT  # the page's Residual: the sum of its two inputs

    def __init__(self, body, shortcut=None) -> None:
        self.body = _as_layer(body, "Residual", "body")
        self.shortcut = None if shortcut is None else _as_layer(shortcut, "Residual", "shortcut")
        self._out_shape: tuple[int, ...] | None = None

    def _mismatch(self, body_shape, shortcut_shape, input_shape) -> ValueError:
        branch = "the identity shortcut" if self.shortcut is None else "the shortcut"
        return ValueError(
            f"Residual: the body outputs {tuple(body_shape[1:])} but {branch} outputs "
            f"{tuple(shortcut_shape[1:])} for input {tuple(input_shape[1:])}; the two must be equal "
            "(give a shortcut that changes the shape as the body does, e.g. a strided 1x1 Conv2D)"
        )

    def output_shape(self, input_shape):
        out = tuple(self.body.output_shape(input_shape))
        skip = tuple(input_shape) if self.shortcut is None else tuple(self.shortcut.output_shape(input_shape))
        if out != skip:
            raise self._mismatch(out, skip, input_shape)
        return out

    def check_input(self, x):
        return x  # the body and the shortcut check their own inputs

    def forward(self, x):
        out = self.body.forward(x)
        skip = x if self.shortcut is None else self.shortcut.forward(x)
        if out.shape != skip.shape:
            raise self._mismatch(out.shape, skip.shape, x.shape)
        self._out_shape = out.shape
        return out + skip  # not in place: the body's last layer may keep its output for backward

    def backward(self, grad_out, need_input_grad=True):
        grad_out = self._check_grad(grad_out, self._cached(self._out_shape))
        through_body = self.body.backward(grad_out, need_input_grad=need_input_grad)
        if not need_input_grad:
            if self.shortcut is not None:
                self.shortcut.backward(grad_out, need_input_grad=False)
            return None
        through_shortcut = grad_out if self.shortcut is None else self.shortcut.backward(grad_out)
        return through_body + through_shortcut

    def get_config(self) -> dict:
        return {"body": self.body, "shortcut": self.shortcut}

    # --- what tools ask ----------------------------------------------------------------------------
    def child_input_shapes(self, input_shape):
        return {name: tuple(input_shape) for name, _ in self.named_children()}

    def grid(self, grid: tuple[float, float]) -> tuple[float, float]:
        return self.body.grid(grid)

    def scratch_bytes(self, input_shape, batch_size: int, itemsize: int = 4) -> int:
        total = self.body.training_bytes(input_shape, batch_size, itemsize)
        if self.shortcut is not None:
            total += self.shortcut.training_bytes(input_shape, batch_size, itemsize)
        return total

    def to_onnx(self, graph, name: str) -> None:
        """The body's nodes, the shortcut's (from the same input), then Add."""
        source = graph.tensor
        self.body.to_onnx(graph, f"{name}.body")
        body_out, graph.tensor = graph.tensor, source
        if self.shortcut is not None:
            self.shortcut.to_onnx(graph, f"{name}.shortcut")
        graph.add("Add", name, [body_out])

    def page_graph(self, page, name: str, source: int, x: np.ndarray) -> tuple[int, np.ndarray]:
        body_index, out = self.body.page_graph(page, f"{name}.body", source, x)
        skip_index, skip = source, x
        if self.shortcut is not None:
            skip_index, skip = self.shortcut.page_graph(page, f"{name}.shortcut", source, x)
        return page.add_sum(name, self, (body_index, skip_index), out + skip)
