"""Model files: a model's architecture (layer records, JSON) and its weights in one ``.npz`` or
``.safetensors`` file, written atomically and read without unpickling or importing anything."""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

import numpy as np

from ...io import (
    FileFormatError,
    check_budget,
    load_npz,
    read_safetensors,
    save_npz_atomic,
    show_path,
    write_safetensors,
)
from ..parameter import placeholders
from .base import Layer, UnknownLayerError, check_saveable, layer_from_record, layer_record, without_draws

FORMAT = "minicnn.Sequential/1"
ARCHITECTURE_KEY = "__architecture__"

_Model = TypeVar("_Model")


class ClassOnly(Generic[_Model]):
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


def model_path(path) -> Path:
    """``path`` as a model file name: ``.npz`` appended unless it ends with ``.npz`` or ``.safetensors``."""
    path = Path(path)
    return path if path.name.endswith((".npz", ".safetensors")) else path.with_name(path.name + ".npz")


def save_model(model, path) -> Path:
    """Write ``model`` (a Sequential) with its architecture; refuses, before writing, a model whose
    layers would not load back (:func:`~minicnn.nn.layers.base.check_saveable`)."""
    path = model_path(path)
    check_model_saveable(model)
    arrays = model.state_dict()
    meta = {
        "format": FORMAT,
        "layers": [layer_record(layer) for layer in model.layers],
        "frozen": [name for name, p in model.named_parameters() if not p.requires_grad],
    }
    if path.name.endswith(".safetensors"):
        write_safetensors(path, arrays, {ARCHITECTURE_KEY: json.dumps(meta)})
        return path
    arrays[ARCHITECTURE_KEY] = np.array(json.dumps(meta))
    save_npz_atomic(path, arrays)
    return path


def check_model_saveable(model) -> None:
    """ValueError (one line, naming the layer) unless every layer of ``model`` (a Sequential) can be
    written in a form that loads back (:func:`~minicnn.nn.layers.base.check_saveable`)."""
    for i, layer in enumerate(model.layers):
        check_saveable(layer, f"layer {i}")


def load_model(cls, path):
    """A ``cls`` (Sequential) rebuilt from a file :func:`save_model` wrote; see ``Sequential.load``."""
    shown = show_path(path)
    if str(path).endswith(".safetensors"):
        arrays, metadata = read_safetensors(path)
        if ARCHITECTURE_KEY in metadata:
            arrays[ARCHITECTURE_KEY] = np.array(metadata[ARCHITECTURE_KEY])
    else:
        arrays = load_npz(path)
    if ARCHITECTURE_KEY not in arrays:
        raise FileFormatError(
            f"Sequential.load: {shown} is not a minicnn model file (no architecture record)"
        )
    try:
        meta = model_meta(arrays.pop(ARCHITECTURE_KEY))
        check_weights(arrays)
        model = _build_to_load(cls, meta["layers"], arrays, shown)
    except UnknownLayerError as exc:
        raise FileFormatError(f"Sequential.load: {shown}: {exc}") from None
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


# --- loading without drawing: build on stand-ins, check the file against them, then adopt its arrays ---


def _build_to_load(cls, records: list[dict], arrays: dict[str, np.ndarray], shown: str):
    """The model ``records`` describe, holding ``arrays`` as its weights.

    It is first built on stand-ins (:func:`minicnn.nn.parameter.placeholders`: no weight is drawn or
    allocated), so the file's keys and shapes and the model's total size (weights and gradients)
    are checked against the memory budget before any memory is taken; then each parameter adopts
    its array from the file without a copy.
    """
    with placeholders():
        model = cls.from_architecture(without_draws(records))
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


def layers_from_records(records: list) -> list[Layer]:
    """Layers from a saved architecture's records; never imports (an unknown class is one line)."""
    return [layer_from_record(record, where=f"layer {i}") for i, record in enumerate(records)]


def model_meta(record: np.ndarray) -> dict:
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


def check_weights(arrays: dict[str, np.ndarray]) -> None:
    """Weights must be real floating-point numbers and finite."""
    for name, value in arrays.items():
        if value.dtype.kind != "f":
            raise ValueError(f"{name} has dtype {value.dtype}, expected float32 or float64")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} holds NaN or infinite values")
