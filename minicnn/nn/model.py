"""Sequential: layers applied in order, with batched prediction, a summary, and safe save / load."""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

import numpy as np

from ..io import (
    FileFormatError,
    check_budget,
    load_npz,
    read_safetensors,
    save_npz_atomic,
    show_path,
    write_safetensors,
)
from . import _threads
from .layers import LAYERS, Layer, MaxPool2D, ReLU
from .parameter import NoDrawGenerator, Parameter, placeholders

FORMAT = "minicnn.Sequential/1"
_ARCH_KEY = "__architecture__"

_Model = TypeVar("_Model")


class _ClassOnly(Generic[_Model]):
    """A classmethod that refuses to be called on an instance.

    ``Sequential.load(path)`` builds a new model; ``model.load(path)`` on an existing model would
    return that new model and leave ``model`` unchanged, silently. Through this descriptor the
    instance call raises a TypeError that says what to use instead.
    """

    def __init__(self, method: Callable[..., _Model]) -> None:
        self.method = method
        self.__doc__ = method.__doc__

    def __get__(self, instance: object, owner: type) -> Callable[..., _Model]:
        if instance is None:
            return types.MethodType(self.method, owner)  # bound to the class, as a classmethod is
        name = self.method.__name__

        def refuse(*args: object, **kwargs: object) -> NoReturn:
            raise TypeError(
                f"{owner.__name__}.{name}() builds a new model and is called on the class: "
                f"model = {owner.__name__}.{name}(path); to load weights into this model in "
                f"place, use model.load_state_dict({owner.__name__}.{name}(path).state_dict())"
            )

        return refuse


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

    def children(self) -> list[Layer]:
        return self.layers

    # --- computing -------------------------------------------------------------------------------
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape after every layer, inferred layer by layer through their ``output_shape``."""
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        order = self._order()
        with _threads.single_threaded_blas():  # the layers share the cores out themselves
            for layer in order:
                x = layer.forward(x)
        self._out_shape, self._run = np.shape(x), order
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
        from .functional import softmax

        return softmax(self.predict_logits(X, batch_size))

    def predict(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Index of the largest output, (N,), computed in eval mode in batches."""
        return self.predict_logits(X, batch_size).argmax(axis=1)

    def predict_logits(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The model's outputs in eval mode, computed in batches; the previous mode is restored.

        X : (N, C, H, W) -> (N, K). Besides an ndarray, ``X`` may be any array-like with ``shape``
        whose slices are ndarrays (uint8-backed :class:`minicnn.data.Images`: floats per batch).
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
        with self.evaluating():
            chunks = [self.forward(np.asarray(X[i : i + batch_size])) for i in range(0, len(X), batch_size)]
        if not chunks:  # an empty batch: empty results of the right width
            return np.zeros((0,) + self.output_shape(X.shape)[1:], dtype=self._dtype())
        return np.concatenate(chunks)

    def _dtype(self) -> np.dtype:
        return next((p.dtype for p in self.parameters()), np.dtype(np.float32))

    # --- parameters and modes ---------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """``[("0.weight", Parameter), ("0.bias", Parameter), ...]``: PyTorch's naming (nested:
        ``"1.0.weight"``)."""
        return [
            (f"{i}.{name}", p) for i, layer in enumerate(self.layers) for name, p in layer.named_parameters()
        ]

    def buffers(self) -> dict[str, np.ndarray]:
        """Every layer's buffers, keyed as PyTorch keys them (``"1.running_mean"``)."""
        return {
            f"{i}.{name}": buf for i, layer in enumerate(self.layers) for name, buf in layer.buffers().items()
        }

    def train(self, mode: bool = True) -> Sequential:
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed as PyTorch keys them (``"0.weight"``)."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: buf.copy() for name, buf in self.buffers().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values into the model's arrays in place; keys and shapes must match exactly."""
        targets = {name: p.data for name, p in self.named_parameters()}
        targets.update(self.buffers())
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise KeyError(
                f"Sequential.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        for name, target in targets.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(
                    f"Sequential.load_state_dict: {name} expected shape {target.shape}, got {value.shape}"
                )
            target[...] = value

    # --- description --------------------------------------------------------------------------------
    def summary(self, input_shape) -> str:
        """A table of layers, output shapes and parameter counts for inputs of ``input_shape``
        (C, H, W) or (N, C, H, W), like Keras's ``model.summary()``. Shapes come from each layer's
        ``output_shape``; nothing is computed."""
        shape = tuple(input_shape)
        if len(shape) in (1, 3):
            shape = (1,) + shape
        rows = [("Layer", "Output shape", "Params")]
        total = trainable = 0
        out = shape
        for i, layer in enumerate(self.layers):
            out = layer.output_shape(out)
            count = sum(p.size for p in layer.parameters())
            total += count
            trainable += sum(p.size for p in layer.parameters() if p.requires_grad)
            rows.append((f"{i}: {layer!r}", str((None,) + tuple(out[1:])).replace("None", "N"), f"{count:,}"))
        widths = [max(len(r[k]) for r in rows) for k in range(3)]
        line = "-" * (sum(widths) + 4)

        def fmt(r: tuple[str, str, str]) -> str:
            return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"

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
        Sequential is ``{"type": "Sequential", "layers": [...]}``."""
        return [{"type": type(layer).__name__, **layer.get_config()} for layer in self.layers]

    def get_config(self) -> dict:
        return {"layers": self.architecture()}

    def extra_repr(self) -> str:
        return ", ".join(repr(layer) for layer in self.layers)

    @classmethod
    def from_architecture(cls, spec: list[dict]) -> Sequential:
        """Build a model from :meth:`architecture`'s output (weights freshly initialized)."""
        layers: list[Layer] = []
        for i, item in enumerate(spec):
            item = dict(item)
            kind = item.pop("type", None)
            if kind == "Sequential":
                layers.append(cls.from_architecture(item.get("layers", [])))
                continue
            if kind not in LAYERS:
                known = sorted(LAYERS) + ["Sequential"]
                raise ValueError(f"Sequential: layer {i} has unknown type {kind!r}; known: {known}")
            layers.append(LAYERS[kind](**item))
        return cls(layers)

    # --- files -------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the architecture (JSON) and every weight and buffer to a ``.npz`` file, or for a
        ``.safetensors`` name to a safetensors file (PyTorch's keys and layouts; the architecture in
        the header's ``__metadata__``), which ``safetensors.torch.load_file`` reads as a state dict.

        ``.npz`` is appended when ``path`` ends with neither, as ``np.savez`` does
        (``model.save("digits")`` writes ``digits.npz``); the path written is returned. The write is
        atomic: a temporary file in the same folder, then a rename, so an interrupted save never
        replaces a good file with a broken one.
        """
        path = Path(path)
        if not path.name.endswith((".npz", ".safetensors")):
            path = path.with_name(path.name + ".npz")
        arrays = self.state_dict()
        meta = {
            "format": FORMAT,
            "layers": self.architecture(),
            "frozen": [name for name, p in self.named_parameters() if not p.requires_grad],
        }
        if path.name.endswith(".safetensors"):
            write_safetensors(path, arrays, {_ARCH_KEY: json.dumps(meta)})
            return path
        arrays[_ARCH_KEY] = np.array(json.dumps(meta))
        save_npz_atomic(path, arrays)
        return path

    @_ClassOnly
    def load(cls, path) -> Sequential:
        """Rebuild a model saved by :meth:`save` (``.npz`` or ``.safetensors``):
        ``model = Sequential.load("digits.npz")``.

        Called on the class only: ``model.load(path)`` raises TypeError (it cannot change ``model``;
        to load weights into an existing model use ``model.load_state_dict(...)``). Never unpickles.

        Every malformed input (a foreign file, a wrong JSON type, deep nesting, complex or non-finite
        weights, missing or extra arrays, shapes that disagree, layers above the memory budget)
        raises :class:`minicnn.io.FileFormatError`, a ValueError that names the file.
        """
        shown = show_path(path)
        if str(path).endswith(".safetensors"):
            arrays, metadata = read_safetensors(path)
            if _ARCH_KEY in metadata:
                arrays[_ARCH_KEY] = np.array(metadata[_ARCH_KEY])
        else:
            arrays = load_npz(path)
        if _ARCH_KEY not in arrays:
            raise FileFormatError(
                f"Sequential.load: {shown} is not a minicnn model file (no architecture record)"
            )
        try:
            meta = _model_meta(arrays.pop(_ARCH_KEY))
            _check_weights(arrays)
            model = _build_to_load(cls, meta["layers"], arrays, shown)
        except (ValueError, KeyError, TypeError, RecursionError, MemoryError) as exc:
            reason = (
                "nested too deeply"
                if isinstance(exc, RecursionError)
                else str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
            )
            raise FileFormatError(
                f"Sequential.load: {shown} does not hold a valid minicnn model: {reason}"
            ) from None
        frozen = set(meta["frozen"])
        for name, p in model.named_parameters():
            p.requires_grad = name not in frozen
        return model


def _model_meta(record: np.ndarray) -> dict:
    """The architecture record of a saved model, with every JSON type checked."""
    if record.dtype.kind != "U" or record.shape != ():
        raise ValueError(
            f"the architecture record is a {record.dtype} array of shape {record.shape}, expected one string"
        )
    meta = json.loads(str(record))
    if not isinstance(meta, dict):
        # a ValueError, as every malformed file is (load turns it into FileFormatError)
        raise ValueError(  # noqa: TRY004
            f"the architecture record is a JSON {type(meta).__name__}, expected an object"
        )
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
    layers, frozen = meta.get("layers"), meta.get("frozen", [])
    if not isinstance(layers, list) or not layers or not all(isinstance(item, dict) for item in layers):
        raise ValueError("'layers' must be a non-empty list of layer records")
    if not isinstance(frozen, list) or not all(isinstance(name, str) for name in frozen):
        raise ValueError(f"'frozen' must be a list of parameter names, got {frozen!r}")
    return {"layers": layers, "frozen": frozen}


# --- loading without drawing: build on stand-ins, check the file against them, then adopt its arrays ---


def _build_to_load(cls, spec: list[dict], arrays: dict[str, np.ndarray], shown: str) -> Sequential:
    """The model ``spec`` describes, holding ``arrays`` as its weights.

    It is first built on stand-ins (:func:`minicnn.nn.parameter.placeholders`: no weight is drawn or
    allocated), so the file's keys and shapes and the model's total size (weights and gradients)
    are checked against the memory budget before any memory is taken; then each parameter adopts
    its array from the file without a copy.
    """
    with placeholders():
        model = cls.from_architecture(_without_draws(spec))
    expected = {name: p.data for name, p in model.named_parameters()}
    expected.update(model.buffers())
    _check_file_state(expected, arrays)
    check_budget(
        sum(2 * value.size * value.dtype.itemsize for value in expected.values()),
        f"the model in {shown} (weights and gradients)",
    )
    for name, p in model.named_parameters():
        p.adopt(arrays[name])
    for name, buffer in model.buffers().items():
        buffer[...] = arrays[name]
    return model


def _without_draws(spec: list[dict]) -> list[dict]:
    """``spec`` with ``rng`` set to a :class:`NoDrawGenerator` for every layer that draws initial
    weights (its constructor takes ``init`` and ``rng``); nested ``layers`` lists likewise."""
    records = []
    for item in spec:
        item = dict(item)
        if isinstance(item.get("layers"), list):
            item["layers"] = _without_draws(item["layers"])
        kind = item.get("type")
        layer_class = LAYERS.get(kind) if isinstance(kind, str) else None
        if layer_class is not None and {"init", "rng"} <= set(inspect.signature(layer_class).parameters):
            item.setdefault("rng", NoDrawGenerator())
        records.append(item)
    return records


def _check_file_state(expected: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> None:
    """The file's arrays must be exactly the model's keys, each of the model's shape."""
    missing, unexpected = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise ValueError(f"missing keys {_some(missing)}, unexpected keys {_some(unexpected)}")
    for name, value in expected.items():
        if arrays[name].shape != value.shape:
            raise ValueError(f"{name} expected shape {value.shape}, got {arrays[name].shape}")


def _some(names: list[str], count: int = 6) -> str:
    return str(names) if len(names) <= count else f"{names[:count]} and {len(names) - count} more"


def _check_weights(arrays: dict[str, np.ndarray]) -> None:
    """Weights must be real floating-point numbers and finite."""
    for name, value in arrays.items():
        if value.dtype.kind != "f":
            raise ValueError(f"{name} has dtype {value.dtype}, expected float32 or float64")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} holds NaN or infinite values")
