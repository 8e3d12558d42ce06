"""The layer contract (:class:`Layer`), the registry of layer classes, and layer records.

Every layer follows one contract:

- ``output_shape(input_shape)`` says what ``forward`` returns for an input of that shape, without
  computing anything (model summaries and config builders infer sizes through it);
- ``forward(x)`` returns the output and keeps what ``backward`` needs (in attributes named for
  what they hold, e.g. ``self._cols``);
- ``backward(grad_out, need_input_grad=True)`` returns d loss / d input and *adds* d loss / d
  parameter to each ``Parameter.grad``; with ``need_input_grad=False`` a layer may skip the input
  gradient and return None (a model's first layer: a training step never needs it);
- ``get_config()`` returns the constructor arguments, so that the layer can be saved and rebuilt.

The rest comes from the base class, by walking what a layer holds, as PyTorch does: an attribute
that is a :class:`~minicnn.nn.parameter.Parameter` is a parameter; an attribute that is a ``Layer``,
or a list or tuple of them, is a child, whose parameters, buffers, mode, state and device follow the
parent's under dotted names (``"1.body.0.weight"``). Attributes whose names start with ``_`` are
private caches.

A layer's arrays may live on any device (``layer.to("cuda")``, ``layer.to(array_api_strict)``):
``forward`` and ``backward`` ask their arrays for their library (``xp = namespace(x)``); minicnn's own
layers keep a fast path for NumPy arrays. ``state_dict()`` always returns NumPy copies on the host.

A layer declares what input it takes (``input_ndim``, ``input_size_argument``) and the base class
checks every input against that before ``forward`` runs (Keras's ``InputSpec``), so ``forward``
bodies hold only the math.

Every subclass is registered when its class statement runs: configs and saved models name it by
its class name (``"Scale"``) or by ``"package.module:ClassName"``. Loading a saved model never
imports anything; a config's long form imports the module it names (:func:`layer_class`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ...io import check_budget
from .._backend import (
    Device,
    asarray_like,
    check_device,
    device,
    dtype_in,
    host_dtype,
    is_array,
    namespace,
    to_device,
    to_host,
)
from ..parameter import NoDrawGenerator, Parameter, placeholders
from ..utils import check_dtype

_INITS = ("he", "he_uniform", "glorot", "glorot_normal")

#: ``Layer.javascript`` of minicnn's own layers: their forward pass is in the explorer's script
#: (``minicnn/see/explore.js``, its ``FORWARD`` table under the class name).
BUILTIN_JAVASCRIPT = "explore.js"


def init_weight(
    shape, fan_in: int, fan_out: int, init: str, dtype, rng: np.random.Generator, owner: str = "init_weight"
) -> np.ndarray:
    """Initial weights: He (Kaiming) normal by default, or Glorot (Xavier) uniform.

    ``he``: N(0, 2/fan_in), for ReLU networks (He et al. 2015). ``he_uniform``: U(-a, a), a = sqrt(6/fan_in).
    ``glorot``: U(-a, a), a = sqrt(6/(fan_in + fan_out)) (Glorot & Bengio 2010). ``glorot_normal``:
    N(0, 2/(fan_in + fan_out)). Drawn in float64 and cast, so float32 and float64 layers built
    from one seed hold the same values up to rounding. Shapes whose draw would exceed the memory
    budget (:func:`minicnn.io.memory_budget`) raise MemoryError before anything is allocated.
    """
    if init not in _INITS:
        raise ValueError(f"{owner}: init must be one of {_INITS}, got {init!r}")
    check_budget(
        int(np.prod(shape, dtype=object)) * (8 + np.dtype(dtype).itemsize),
        f"{owner}: weights of shape {tuple(shape)}",
    )
    if init == "he":
        values = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    elif init == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        values = rng.uniform(-limit, limit, size=shape)
    elif init == "glorot":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        values = rng.uniform(-limit, limit, size=shape)
    else:
        values = rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=shape)  # glorot_normal
    return values.astype(dtype)


# ----------------------------------------------------------------------------------------------
# The registry: every Layer subclass, by short and long name
# ----------------------------------------------------------------------------------------------
_BY_LONG_NAME: dict[str, type[Layer]] = {}
_BY_SHORT_NAME: dict[str, dict[str, type[Layer]]] = {}  # "Scale" -> {long name: class}
_LONG_FORM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class UnknownLayerError(ValueError):
    """A layer type that no known class answers to, or that two classes answer to (one line)."""


def long_name(cls: type) -> str:
    """``"package.module:ClassName"``: the name that tells a class apart from any other."""
    return f"{cls.__module__}:{cls.__qualname__}"


def is_builtin(cls: type) -> bool:
    """True for minicnn's own layer classes (saved under their short names)."""
    return cls.__module__.startswith("minicnn.")


def _register(cls: type[Layer]) -> None:
    if cls.__name__.startswith("_"):
        return  # a private base (_Pool2D): not a layer of its own
    name = long_name(cls)
    _BY_LONG_NAME[name] = cls  # a class defined again (a re-run notebook cell) replaces the old one
    _BY_SHORT_NAME.setdefault(cls.__name__, {})[name] = cls


def known_layers() -> dict[str, type[Layer]]:
    """Every registered class by its long name (``"minicnn.nn.layers.conv:Conv2D"``), in definition order."""
    return dict(_BY_LONG_NAME)


def builtin_layers() -> dict[str, type[Layer]]:
    """minicnn's own layer classes by short name, in definition order: the list the docs, the configs'
    error messages and the contract tests go by."""
    return {cls.__name__: cls for cls in _BY_LONG_NAME.values() if is_builtin(cls)}


def layer_class(name, *, allow_import: bool = False) -> type[Layer]:
    """The class a layer type names: a short name (``"Conv2D"``, ``"Scale"``) or a long one
    (``"mylayers:Scale"``).

    A long name whose module is not imported yet is imported only with ``allow_import`` (configs: it
    runs that module's code, as any import does); saved models never import. Raises
    :class:`UnknownLayerError` (a ValueError, one line) for an unknown or ambiguous name.
    """
    if not isinstance(name, str) or not name:
        raise UnknownLayerError(f"a layer type must be a class name such as 'Conv2D', got {name!r}")
    if ":" in name:
        return _long_form(name, allow_import)
    found = _BY_SHORT_NAME.get(name, {})
    if len(found) == 1:
        return next(iter(found.values()))
    if len(found) > 1:
        raise UnknownLayerError(
            f"layer type {name!r} is ambiguous: it names {', '.join(sorted(found))}; "
            "write the long form 'package.module:ClassName'"
        )
    import difflib

    close = difflib.get_close_matches(name, list(_BY_SHORT_NAME), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownLayerError(
        f"unknown layer type {name!r}{hint}; known: {', '.join(builtin_layers())}; a layer of your "
        "own is known once the module that defines it is imported (or name it 'package.module:ClassName')"
    )


def _long_form(name: str, allow_import: bool) -> type[Layer]:
    if not _LONG_FORM.match(name):
        raise UnknownLayerError(f"layer type {name!r}: expected 'package.module:ClassName'")
    if name in _BY_LONG_NAME:
        return _BY_LONG_NAME[name]
    module, _, qualname = name.partition(":")
    if not allow_import:
        raise UnknownLayerError(
            f"layer class {name!r} is not known: import {module} (the module that defines it) before "
            f"loading; the commands take --import {module}"
        )
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UnknownLayerError(f"layer type {name!r}: cannot import {module}: {exc}") from None
    if name not in _BY_LONG_NAME:
        raise UnknownLayerError(f"layer type {name!r}: {module} defines no Layer subclass {qualname!r}")
    return _BY_LONG_NAME[name]


def import_layer_modules(modules) -> None:
    """Import the modules that define layers of the user's own (the commands' ``--import MODULE``), so
    that the model files naming them load. This runs those modules' code, as any import does.
    Raises UnknownLayerError (one line) for a module that cannot be imported."""
    for module in modules or ():
        try:
            importlib.import_module(module)
        except Exception as exc:  # an import runs arbitrary code: whatever it raises is one line here
            raise UnknownLayerError(
                f"--import {module}: cannot import it: {type(exc).__name__}: {exc}"
            ) from None


#: The help of the commands' ``--import`` option.
IMPORT_HELP = (
    "import this module first (repeatable): the module that defines a layer of your own that the run's "
    "model holds (this runs the module's code, as any import does)"
)


def saved_type(cls: type[Layer]) -> str:
    """The name a saved model records for ``cls``: the short name for minicnn's own layers, the long
    name for any other (so that two classes of one short name stay apart)."""
    return cls.__name__ if is_builtin(cls) else long_name(cls)


# ----------------------------------------------------------------------------------------------
# Forward passes that no backward follows
# ----------------------------------------------------------------------------------------------
_NO_GRAD: contextvars.ContextVar[bool] = contextvars.ContextVar("minicnn_no_grad", default=False)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """``with no_grad(): ...``: forward passes that no backward pass will follow (as PyTorch's
    ``torch.no_grad``), such as predictions and the figures' feature maps.

    A layer keeps what its backward pass needs (its input, the expanded matrix of a convolution, a
    ReLU's mask) until the next forward: a model's whole batch of activations, layer after layer.
    Under ``no_grad`` each layer drops those (its ``cache_names``) as soon as its forward returns,
    so at most the arrays of one layer's step are alive at once. A ``backward`` after such a forward
    says that there is nothing to differentiate. :meth:`Sequential.predict_logits` (and so
    ``predict`` and ``predict_proba``) runs under it.
    """
    token = _NO_GRAD.set(True)
    try:
        yield
    finally:
        _NO_GRAD.reset(token)


def grad_enabled() -> bool:
    """False inside :func:`no_grad`: layers keep nothing for a backward pass."""
    return not _NO_GRAD.get()


# ----------------------------------------------------------------------------------------------
# Declared input checks
# ----------------------------------------------------------------------------------------------
def _checked_forward(forward: Callable) -> Callable:
    """``forward`` preceded by the layer's declared input checks (:meth:`Layer.check_input`), and
    followed, under :func:`no_grad`, by dropping what it kept for backward (``cache_names``)."""

    @functools.wraps(forward)
    def checked(self, x):
        out = forward(self, self.check_input(x))
        if _NO_GRAD.get():
            for name in self.cache_names:
                setattr(self, name, None)
        return out

    checked.__minicnn_checked__ = True  # type: ignore[attr-defined]
    return checked


def _json_argument(value):
    """A constructor argument as a saved config holds it (see :meth:`Layer.get_config`)."""
    if isinstance(value, np.random.Generator):
        return None
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_json_argument(v) for v in value]
    return value


def _recorded_init(init: Callable) -> Callable:
    """``__init__`` that first records the arguments it was called with (the outermost call only, so
    a subclass calling ``super().__init__`` keeps its own), for the default :meth:`Layer.get_config`."""
    signature = inspect.signature(init)
    variadic = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    var_keyword = next((p.name for p in signature.parameters.values() if p.kind == p.VAR_KEYWORD), None)

    @functools.wraps(init)
    def recorded(self, *args, **kwargs):
        if "_init_arguments" not in vars(self):
            arguments: dict = {}
            if not variadic:
                try:
                    bound = signature.bind(self, *args, **kwargs)
                except TypeError:
                    bound = None  # the call itself fails below, with Python's own message
                if bound is not None:
                    bound.apply_defaults()
                    arguments = dict(list(bound.arguments.items())[1:])  # not self
                    if var_keyword is not None:
                        arguments.update(arguments.pop(var_keyword, {}))
            self._init_arguments = {k: _json_argument(v) for k, v in arguments.items()}
        init(self, *args, **kwargs)

    recorded.__minicnn_recorded__ = True  # type: ignore[attr-defined]
    return recorded


@dataclass(frozen=True)
class Window:
    """A sliding window over the spatial axes, as receptive fields need it (first axis, then second).

    Output pixel ``i`` reads input pixels ``i * stride - padding + u * dilation`` for ``u < kernel``.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]  # before the first pixel (top, left)
    dilation: tuple[int, int] = (1, 1)

    def grid(self, grid: tuple[float, float]) -> tuple[float, float]:
        """Where output pixels sit in input coordinates, from where the input's pixels sit:
        ``(start, jump)`` means pixel i is centred on input pixel ``start + i * jump``."""
        start, jump = grid
        k, s, p, d = self.kernel[0], self.stride[0], self.padding[0], self.dilation[0]
        return start + (d * (k - 1) / 2 - p) * jump, jump * s


class Layer:
    """Base class: children and parameters found by walking attributes, modes, state, declared
    input checks, the registry, and what tools ask of a layer.

    What the tools ask of a layer (override in a layer of your own where it applies):

    - ``to_onnx(graph, name)``: its ONNX nodes (:mod:`minicnn.export`);
    - ``javascript``: its forward pass in the explorer page (:mod:`minicnn.see.explore`);
    - ``window()``: its sliding window, for receptive fields in the figures;
    - ``scratch_bytes(input_shape, batch_size)``: memory its passes take besides its output;
    - ``is_convolution``: whether its ``weight`` holds kernels (out, in, kh, kw) that the figures plot.
    """

    training: bool = True
    #: The constructor argument that must equal the input's size on axis 1 (``"in_channels"``), for a
    #: layer whose size follows its input: a config builder fills it in from the incoming shape, and
    #: every input is checked against it.
    input_size_argument: str | None = None
    #: The number of input dimensions, batch axis included (4 for images, 2 for features); None: any.
    input_ndim: int | None = None
    #: The least number of input dimensions, where ``input_ndim`` is None (Flatten: 2).
    input_min_ndim: int = 0
    #: Names of array attributes saved with the weights but not trained (BatchNorm2D's running statistics).
    buffer_names: tuple[str, ...] = ()
    #: Names of the attributes ``forward`` fills for ``backward`` (Conv2D's ``_x`` and ``_cols``): set
    #: to None after each forward under :func:`no_grad`, so their memory is freed at once.
    cache_names: tuple[str, ...] = ()
    #: True for a layer whose ``weight`` holds kernels (out, in, kh, kw) slid over the input (Conv2D).
    is_convolution: bool = False
    #: The layer's forward pass in the explorer page: a JavaScript function ``(x, L) => tensor`` (see
    #: ``minicnn/see/explore.js``). minicnn's own layers have theirs in that file; None elsewhere.
    javascript: str | None = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if forward is not None and not getattr(forward, "__minicnn_checked__", False):
            cls.forward = _checked_forward(forward)  # type: ignore[method-assign]
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "__minicnn_recorded__", False):
            cls.__init__ = _recorded_init(init)  # type: ignore[misc,method-assign]
        _register(cls)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``forward``'s output for an input of ``input_shape`` (the same, unless overridden)."""
        return tuple(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no forward(); write forward(self, x)")

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        raise NotImplementedError(
            f"{type(self).__name__} has no backward(); write backward(self, grad_out, need_input_grad=True)"
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # --- children, parameters and buffers -----------------------------------------------------
    def named_children(self) -> list[tuple[str, Layer]]:
        """``[(name, layer)]``: the layers this one holds, in the order they were assigned (a list
        or tuple attribute ``blocks`` gives ``"blocks.0"``, ``"blocks.1"``)."""
        found: list[tuple[str, Layer]] = []
        for name, value in vars(self).items():
            if name.startswith("_"):
                continue
            if isinstance(value, Layer):
                found.append((name, value))
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Layer) for v in value):
                found += [(f"{name}.{i}", v) for i, v in enumerate(value)]
        return found

    def children(self) -> list[Layer]:
        """The layers this one holds directly (see :meth:`named_children`)."""
        return [layer for _, layer in self.named_children()]

    def named_layers(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        """This layer (named ``prefix``) and every layer inside it, depth first, with dotted names."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_layers(f"{prefix}.{name}" if prefix else name)

    def get_layer(self, name: str | int) -> Layer:
        """The layer inside this one called ``name`` (``"3.body.0"``; an int is a child's index)."""
        key = str(name)
        for found, layer in self.named_layers():
            if found == key and found:
                return layer
        names = [found for found, _ in self.named_layers() if found]
        raise KeyError(f"{self._label()} has no layer {key!r}; it has {names}")

    def path_to(self, name: str | int) -> list[Layer]:
        """The layers from this one down to the one called ``name``: ``[self, ..., that layer]``."""
        key, path, layer = str(name), [self], self
        while key:
            for child_name, child in layer.named_children():
                if key == child_name or key.startswith(child_name + "."):
                    key, layer = key[len(child_name) + 1 :], child
                    path.append(child)
                    break
            else:
                names = [found for found, _ in self.named_layers() if found]
                raise KeyError(f"{self._label()} has no layer {str(name)!r}; it has {names}")
        return path

    def output_of(self, name: str | int, x: np.ndarray) -> np.ndarray:
        """The output of the layer called ``name`` for the input ``x`` of this one (each block on the way
        says what its child reads: :meth:`child_input`); the layers after it are not run."""
        path = self.path_to(name)
        for parent, child in zip(path, path[1:]):
            x = parent.child_input(child, x)
        return path[-1].forward(x)

    def grid_of(self, name: str | int, grid: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
        """Where the output pixels of the layer called ``name`` sit in this layer's input coordinates
        (``(start, jump)``, see :meth:`Window.grid`)."""
        path = self.path_to(name)
        for parent, child in zip(path, path[1:]):
            grid = parent.child_input_grid(child, grid)
        return path[-1].grid(grid)

    def find_layers(self, layer_type: type | tuple[type, ...]) -> list[tuple[str, Layer]]:
        """``[(name, layer)]`` for every layer of ``layer_type`` in this one, depth first, named as
        PyTorch names them (``"0"``, ``"3.body.0"``); a plain layer of that type finds itself as ``""``."""
        return [(name, layer) for name, layer in self.named_layers() if isinstance(layer, layer_type)]

    def convolutions(self) -> list[tuple[str, Layer]]:
        """``[(name, layer)]`` of every layer inside this one whose ``is_convolution`` is set, depth
        first: ``convolutions()[0]`` is "the first convolution" the figures plot."""
        return [(name, layer) for name, layer in self.named_layers() if layer.is_convolution]

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """``[(name, Parameter)]``: this layer's own (``weight`` before ``bias``, as assigned), then each
        child's under its name (``"body.0.weight"``). A parameter held twice is listed once."""
        found = [(name, value) for name, value in vars(self).items() if isinstance(value, Parameter)]
        for prefix, child in self.named_children():
            found += [(f"{prefix}.{name}", p) for name, p in child.named_parameters()]
        seen: set[int] = set()
        unique = []
        for name, p in found:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append((name, p))
        return unique

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the weights (``buffer_names``), this layer's and its
        children's, keyed as PyTorch keys them (``"1.running_mean"``)."""
        found = {name: getattr(self, name) for name in self.buffer_names}
        for prefix, child in self.named_children():
            found.update({f"{prefix}.{name}": value for name, value in child.buffers().items()})
        return found

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def freeze(self, frozen: bool = True) -> Layer:
        """Stop (or resume) training this layer's parameters, its children's included; returns the layer."""
        for p in self.parameters():
            p.requires_grad = not frozen
        return self

    def train(self, mode: bool = True) -> Layer:
        """Set training mode (``mode=False``: eval mode) here and in every child; returns the layer."""
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Layer:
        return self.train(False)

    @contextlib.contextmanager
    def evaluating(self):
        """``with model.evaluating(): ...`` runs the block in eval mode, then restores the previous mode."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def astype(self, dtype) -> Layer:
        """Convert every parameter, gradient and buffer (children's too) to ``dtype`` (float32 or
        float64) in place, and each layer's ``dtype`` setting with them; returns the layer.
        ``model.astype(np.float64)`` makes a model checkable by :mod:`minicnn.nn.gradcheck`."""
        dtype = check_dtype(dtype)
        for _, layer in self.named_layers():
            for value in vars(layer).values():
                if isinstance(value, Parameter):
                    value.data = _cast(value.data, dtype)
                    value.grad = namespace(value.data).zeros_like(value.data)
            for name in layer.buffer_names:
                setattr(layer, name, _cast(getattr(layer, name), dtype))
            if isinstance(getattr(layer, "dtype", None), np.dtype):
                layer.dtype = dtype  # type: ignore[attr-defined]
        return self

    def to(self, device: Device) -> Layer:
        """Move every parameter, gradient and buffer (children's too) to ``device``: "cpu" (NumPy),
        "cuda" (CuPy), an array namespace module, or (module, device) (see
        :func:`minicnn.nn.to_device`); returns the layer. What the last forward pass kept for
        backward is dropped (run forward again). Raises DeviceUnavailable, one line, for "cuda"
        without CuPy or without a GPU, before anything is moved."""
        check_device(device)
        for _, layer in self.named_layers():
            for key, value in list(vars(layer).items()):
                if isinstance(value, Parameter):
                    value.to(device)
                elif _is_cache(key, value):
                    setattr(layer, key, None)
            for name in layer.buffer_names:
                setattr(layer, name, to_device(getattr(layer, name), device))
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed as PyTorch keys them (``"0.weight"``): NumPy
        arrays on the host, wherever the layer's arrays live."""
        state = {name: _host_copy(p.data) for name, p in self.named_parameters()}
        state.update({name: _host_copy(buf) for name, buf in self.buffers().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values into the layer's arrays in place, wherever they live (NumPy arrays go to the
        layer's device); keys and shapes must match exactly."""
        targets = {name: p.data for name, p in self.named_parameters()}
        targets.update(self.buffers())
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        owner = f"{type(self).__name__}.load_state_dict"
        if missing or unexpected:
            raise KeyError(f"{owner}: missing keys {missing}, unexpected keys {unexpected}")
        for name, target in targets.items():
            value = to_host(state[name]) if is_array(state[name]) else np.asarray(state[name])
            if value.shape != tuple(target.shape):
                raise ValueError(f"{owner}: {name} expected shape {tuple(target.shape)}, got {value.shape}")
            if isinstance(target, np.ndarray):
                target[...] = value
            else:  # on another library: moved there, then cast as NumPy's assignment casts
                target[...] = namespace(target).astype(asarray_like(value, target), target.dtype)

    def __getstate__(self) -> dict:
        """Pickle the layer without what the last forward pass cached for backward (``self._x``,
        ``self._cols``, masks): a copy sent to a joblib worker carries weights, not activations."""
        return {key: None if _is_cache(key, value) else value for key, value in vars(self).items()}

    # --- description and records -------------------------------------------------------------
    def get_config(self) -> dict:
        """Constructor arguments as JSON-friendly values: ``type(self)(**get_config())`` rebuilds it
        (a child layer may stand as a value: records turn it into its own record).

        By default, the arguments the layer was constructed with, recorded when its ``__init__`` ran
        (a random generator is recorded as None: loading draws other initial weights, then replaces
        them with the saved ones; a dtype by its name). Override it where the arguments do not
        rebuild the layer; saving checks that they do."""
        return dict(getattr(self, "_init_arguments", {}))

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        """The layer rebuilt from :meth:`get_config`'s output (children already rebuilt)."""
        return cls(**config)

    def extra_repr(self) -> str:
        return ", ".join(
            f"{k}={v!r}" for k, v in self.get_config().items() if k != "dtype" and not _holds_layers(v)
        )

    def __repr__(self) -> str:
        children = self.named_children()
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        extra = self.extra_repr()
        inner = "".join(f"\n  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children)
        return f"{type(self).__name__}({extra + ',' if extra else ''}{inner}\n)"

    # --- what tools ask of a layer --------------------------------------------------------------
    def window(self) -> Window | None:
        """The layer's sliding window for receptive fields; None for a layer that keeps each pixel
        where it is (activations, BatchNorm2D) or has no spatial output."""
        return None

    def grid(self, grid: tuple[float, float]) -> tuple[float, float]:
        """Where this layer's output pixels sit in input coordinates (``(start, jump)``, see
        :meth:`Window.grid`), given where its input's pixels sit."""
        window = self.window()
        return grid if window is None else window.grid(grid)

    def child_input(self, child: Layer, x: np.ndarray) -> np.ndarray:
        """What ``child`` (one of this layer's children) reads when this layer reads ``x``. The
        default, the layer's own input, fits blocks like ``x + body(x)``; Sequential runs the layers
        before the child."""
        return x

    def child_input_grid(self, child: Layer, grid: tuple[float, float]) -> tuple[float, float]:
        """Where the input of ``child`` (one of this layer's children) sits, given this layer's input
        grid. The default, a child that reads this layer's input, fits blocks like ``x + body(x)``."""
        return grid

    def child_input_shapes(self, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]] | None:
        """``{child name: its input shape}`` for this layer's input shape; None where the layer does
        not say (a block of your own: its summary rows then show no shape)."""
        return None

    def scratch_bytes(self, input_shape: tuple[int, ...], batch_size: int, itemsize: int = 4) -> int:
        """Bytes a forward and backward pass on ``batch_size`` inputs take besides the output and its
        gradient (Conv2D: the expanded input); containers count their children here."""
        return 0

    def training_bytes(self, input_shape: tuple[int, ...], batch_size: int, itemsize: int = 4) -> int:
        """Bytes this layer adds while training on one batch of ``itemsize``-byte numbers: its own
        parameters four times (values, gradients, two optimizer moments), its output and that
        output's gradient, and its scratch (Python ints, so nothing overflows)."""
        own = sum(
            p.size * host_dtype(p.data).itemsize for p in vars(self).values() if isinstance(p, Parameter)
        )
        out = self.output_shape((batch_size, *input_shape[1:]))
        activations = 2 * int(np.prod(out, dtype=object)) * itemsize
        return 4 * own + activations + self.scratch_bytes(input_shape, batch_size, itemsize)

    def page_graph(self, page, name: str, source: int, x: np.ndarray) -> tuple[int, np.ndarray]:
        """Add this layer to the explorer page's graph (:class:`minicnn.see.explore.PageGraph`): it
        reads activation ``source`` (the array ``x``, a batch of one); returns the index of its output
        and the output. Containers add their layers; a leaf layer adds itself."""
        return page.add_layer(name, self, source, x)

    def to_onnx(self, graph, name: str) -> None:
        """Append this layer's ONNX nodes to ``graph`` (:class:`minicnn.export.OnnxGraph`): read
        ``graph.tensor``, add nodes with ``graph.add(op, name, extra_inputs, **attributes)`` and
        constants with ``graph.constant(name, array)``. A layer without it cannot be exported."""
        raise NotImplementedError(
            f"layer {name} ({type(self).__name__}) has no ONNX conversion: write "
            f"{type(self).__name__}.to_onnx(self, graph, name) (see the docs, 'Your own layer')"
        )

    # --- helpers ---------------------------------------------------------------------------------
    def expected_input(self) -> str:
        """The input this layer takes, as error messages show it: ``(N, 3, H, W)``, ``(N, 64)``."""
        size = getattr(self, self.input_size_argument) if self.input_size_argument else None
        if self.input_ndim == 4:
            return f"(N, {size if size is not None else 'C'}, H, W)"
        if self.input_ndim == 2:
            return f"(N, {size if size is not None else 'features'})"
        if self.input_min_ndim >= 2:
            return "(N, ...)"
        return "an array"

    def check_input(self, x):
        """Check ``x`` against the declared input (array type, dimensions, size on axis 1) and cast it to
        the layer's ``dtype`` (or, for a layer without one, integers to float32); runs before every
        ``forward``. ``x`` may be an array of any Array API library (NumPy's, CuPy's, ...): its dtype
        is asked of its namespace, and the messages are NumPy's. An input that lives elsewhere than
        the layer's ``weight`` (a NumPy batch for a model moved to a GPU) is refused naming both."""
        expected = self.expected_input()
        on_numpy = isinstance(x, np.ndarray)
        if not on_numpy and (not is_array(x) or isinstance(x, np.generic)):
            raise TypeError(
                f"{self._label()}: expected a numpy.ndarray of shape {expected}, got {type(x).__name__}"
            )
        if not (x.dtype.kind in "biuf" if on_numpy else _real_valued(x)):
            dtype = str(x.dtype).rpartition(".")[2]  # "array_api_strict.complex128": as NumPy names it
            raise TypeError(
                f"{self._label()}: expected a real-valued array of shape {expected}, got dtype {dtype}"
            )
        if self.input_ndim is not None and x.ndim != self.input_ndim:
            hint = " (add a Flatten layer before it)" if self.input_ndim == 2 and x.ndim > 2 else ""
            raise ValueError(f"{self._label()}: expected input {expected}, got {x.shape} ({x.ndim}-D){hint}")
        if x.ndim < self.input_min_ndim:
            raise ValueError(
                f"{self._label()}: expected input {expected} with at least {self.input_min_ndim} "
                f"dimensions, got {x.shape}"
            )
        if self.input_size_argument is not None:
            size = getattr(self, self.input_size_argument)
            if x.shape[1] != size:
                raise ValueError(f"{self._label()}: expected input {expected}, got {x.shape}")
        weight = vars(self).get("weight")
        if isinstance(weight, Parameter) and not (on_numpy and isinstance(weight.data, np.ndarray)):
            self._check_same_place(x, weight.data)
        return _as_float(x, getattr(self, "dtype", None))

    def _check_same_place(self, x, weight) -> None:
        """Refuse, naming both, an input of another library or device than ``weight``: the arithmetic
        would fail with the array library's own message."""
        if namespace(x) is not namespace(weight) or device(x) != device(weight):
            raise TypeError(
                f"{self._label()}: the input is on {_where(x)} but the parameters are on {_where(weight)}; "
                "move the input (minicnn.nn.to_device) or the model (model.to(device))"
            )

    def _cached(self, value, what: str = "forward"):
        if value is None:
            raise RuntimeError(
                f"{self._label()}: backward() called before {what}(), or after a {what}() under "
                "no_grad(), which keeps nothing for it"
            )
        return value

    def _check_grad(self, grad_out, expected_shape: tuple[int, ...]) -> np.ndarray:
        """Check that ``grad_out`` has the shape of the last forward pass's output; every ``backward``
        calls this first, so a wrong gradient names the layer and both shapes."""
        expected = tuple(int(d) for d in expected_shape)
        if not is_array(grad_out) or isinstance(grad_out, np.generic):
            raise TypeError(
                f"{self._label()}.backward: expected grad_out as a numpy.ndarray of shape "
                f"{expected}, got {type(grad_out).__name__}"
            )
        if grad_out.shape != expected:
            raise ValueError(
                f"{self._label()}.backward: expected grad_out of shape {expected}, got {grad_out.shape}"
            )
        return grad_out

    def _label(self) -> str:
        """The layer as named in error messages (its one-line repr)."""
        text = repr(self)
        return text if "\n" not in text else f"{type(self).__name__}(...)"


def _where(array) -> str:
    """Where an array lives, as messages name it: "NumPy (the host)", "array_api_strict,
    Device('device1')"."""
    if isinstance(array, np.ndarray):
        return "NumPy (the host)"
    return f"{namespace(array).__name__.split('.')[0]}, {device(array)!r}"


def _real_valued(x) -> bool:
    """Whether array ``x`` holds booleans, integers or real floats (asked through its namespace)."""
    return bool(namespace(x).isdtype(x.dtype, ("bool", "integral", "real floating")))


def _as_float(x, dtype):
    """``x`` as the NumPy dtype ``dtype`` (a layer's own), or for None floats as they are and integers
    or booleans as floats, as NumPy promotes them with float32 (float32 up to 16 bits, else float64)."""
    if isinstance(x, np.ndarray):
        if not isinstance(dtype, np.dtype):
            dtype = x.dtype if x.dtype.kind == "f" else np.result_type(x.dtype, np.float32)
        return x.astype(dtype, copy=False)
    xp = namespace(x)
    if not isinstance(dtype, np.dtype):
        dtype = host_dtype(x)
        dtype = dtype if dtype.kind == "f" else np.result_type(dtype, np.float32)
    return xp.astype(x, dtype_in(xp, dtype), copy=False)


def _cast(array, dtype: np.dtype):
    """A copy of ``array`` (of any library) as the NumPy dtype ``dtype``."""
    if isinstance(array, np.ndarray):
        return array.astype(dtype)
    xp = namespace(array)
    return xp.astype(array, dtype_in(xp, dtype))


def _host_copy(array) -> np.ndarray:
    """A NumPy copy of ``array``, on the host."""
    return np.array(array, copy=True) if isinstance(array, np.ndarray) else to_host(array)


def _is_cache(key: str, value) -> bool:
    """Whether attribute ``key`` holds what a forward pass kept for backward: a private array, or a
    tuple of them (Conv2D's columns, one per thread)."""
    if not key.startswith("_"):
        return False
    if isinstance(value, tuple):
        return any(is_array(v) for v in value)
    return is_array(value)


def _holds_layers(value) -> bool:
    return isinstance(value, (Layer, dict)) or (
        isinstance(value, (list, tuple)) and any(isinstance(v, (Layer, dict)) for v in value)
    )


# ----------------------------------------------------------------------------------------------
# Records: a layer as JSON-friendly data, and back
# ----------------------------------------------------------------------------------------------
def layer_record(layer: Layer) -> dict:
    """``{"type": name, **constructor arguments}``, child layers as records of their own."""
    config = {key: _record_value(value) for key, value in layer.get_config().items()}
    return {"type": saved_type(type(layer)), **config}


def _record_value(value):
    if isinstance(value, Layer):
        return layer_record(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Layer) for v in value):
        return [layer_record(v) for v in value]
    return value


def _is_record(value) -> bool:
    return isinstance(value, dict) and "type" in value


def layer_from_record(record: dict, *, allow_import: bool = False, where: str = "layer") -> Layer:
    """A layer (weights freshly initialized) from :func:`layer_record`'s output; child records are
    rebuilt first. Raises ValueError (one line, naming ``where``) for an unknown type or bad arguments."""
    if not isinstance(record, dict):
        raise ValueError(
            f"{where}: expected a layer record (an object with 'type'), got {type(record).__name__}"
        )
    config = dict(record)
    cls = layer_class(config.pop("type", None), allow_import=allow_import)
    for key, value in config.items():
        if _is_record(value):
            config[key] = layer_from_record(value, allow_import=allow_import, where=f"{where}.{key}")
        elif isinstance(value, list) and value and all(_is_record(v) for v in value):
            config[key] = [
                layer_from_record(v, allow_import=allow_import, where=f"{where}.{key}[{i}]")
                for i, v in enumerate(value)
            ]
    try:
        return cls.from_config(config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({cls.__name__}): {exc}") from None


def without_draws(records):
    """``records`` (a layer record, or a list of them, nested records included) with ``rng`` set to a
    :class:`~minicnn.nn.parameter.NoDrawGenerator` for every layer whose constructor takes ``rng``
    and was given none: built inside ``placeholders()``, such a layer draws nothing."""
    if isinstance(records, list):
        return [without_draws(item) for item in records]
    if not isinstance(records, dict):
        return records
    item = {key: without_draws(value) for key, value in records.items()}
    try:
        cls = layer_class(item.get("type"))
    except UnknownLayerError:
        return item  # building it names the unknown class
    if "rng" in inspect.signature(cls).parameters and item.get("rng") is None:
        item["rng"] = NoDrawGenerator()
    return item


def check_saveable(layer: Layer, where: str = "model") -> None:
    """Refuse (ValueError, one line) a layer that could not be written in a form that loads back: a
    class no import can make known (defined inside a function), a config that is not JSON or that the
    constructor does not take, or one that rebuilds into other parameters than the layer holds."""
    cls = type(layer)
    if "<locals>" in cls.__qualname__:
        raise ValueError(
            f"{where} ({cls.__name__}) cannot be saved: its class is defined inside a function, so no "
            "import can make it known when loading; define it at the top level of a module"
        )
    record = layer_record(layer)
    try:
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{where} ({cls.__name__}) cannot be saved: get_config() must return JSON values ({exc})"
        ) from None
    if is_builtin(cls):
        for name, child in layer.named_children():
            check_saveable(child, f"{where}.{name}")
        return
    _check_rebuilds(layer, record, where)


def _check_rebuilds(layer: Layer, record: dict, where: str) -> None:
    """A layer of the user's own must rebuild from its record into the same parameters and buffers."""
    cls = type(layer)
    config = {k: v for k, v in record.items() if k != "type"}
    if cls.from_config.__func__ is Layer.from_config.__func__:  # type: ignore[attr-defined]
        try:
            inspect.signature(cls).bind(**config)
        except TypeError as exc:
            raise ValueError(
                f"{where} ({cls.__name__}) cannot be saved: {cls.__name__}(**get_config()) fails ({exc}); "
                f"write {cls.__name__}.get_config() returning its constructor arguments"
            ) from None
    try:
        with placeholders():  # nothing drawn or allocated: only the shapes are compared
            rebuilt = layer_from_record(without_draws(record), where=where)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({cls.__name__}) cannot be saved: rebuilding it fails: {exc}") from None
    ours, theirs = _state_shapes(layer), _state_shapes(rebuilt)
    if ours != theirs:
        raise ValueError(
            f"{where} ({cls.__name__}) cannot be saved: rebuilt from get_config() it holds "
            f"{theirs}, not {ours}; make get_config() return every constructor argument"
        )


def _state_shapes(layer: Layer) -> dict[str, tuple[int, ...]]:
    shapes = {name: tuple(p.data.shape) for name, p in layer.named_parameters()}
    shapes.update({name: tuple(np.shape(value)) for name, value in layer.buffers().items()})
    return shapes
