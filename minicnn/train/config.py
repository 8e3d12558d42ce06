"""Configs: TOML files (read with the standard library's ``tomllib``) -> frozen dataclasses.

A config is checked once, where it enters: unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the key path, the value given, what is allowed, and for a typo the
nearest valid key. Past that point the code trusts it.

Layout of a config file (every key optional except ``[[model.layers]]``)::

    seed = 0
    [data]            source, paths, split fractions, split_seed, standardize, cache_dir, base_url
    [data.augment]    shift, rotate, scale, horizontal_flip, pad_crop, cutout
    [model]           dtype; [[model.layers]] tables: type = "Conv2D", out_channels = 16, ...
    [train]           epochs, batch_size, optimizer and its hyperparameters, schedule, clipping, ...
    [output]          dir, figures

``--set key.path=value`` overrides (:func:`apply_override`) are parsed as the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field

from ..data import SOURCES
from ..io import NotAFileError, open_regular, show_path
from ..nn.optim import OPTIMIZERS

SCHEDULES = ("constant", "step", "cosine")
#: The weights a run ends with: the best validation epoch's, or the last epoch's.
KEEP = ("best", "last")
#: Where training runs: NumPy on the host, or a GPU through CuPy (``pip install -e ".[gpu]"``).
DEVICES = ("cpu", "cuda")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key path."""


def _spec(default, lo=None, hi=None, lo_open=False, hi_open=False, choices=None, doc=""):
    """A dataclass field with its allowed range or choices kept in the field's metadata."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices, "doc": doc}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def _short(text: str, limit: int = 80) -> str:
    """``text`` on one line, cut to ``limit`` characters (a pasted or nested value can be huge)."""
    text = show_path(text)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _describe(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    try:
        text = json.dumps(value) if isinstance(value, (str, bool)) or value is None else repr(value)
    except RecursionError:
        text = f"a {type(value).__name__} nested too deeply"
    return _short(text)


def _allowed(f: dataclasses.Field) -> str:
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(json.dumps(c) for c in m["choices"])
    parts = []
    if m.get("lo") is not None:
        parts.append(f"{'>' if m['lo_open'] else '>='} {m['lo']}")
    if m.get("hi") is not None:
        parts.append(f"{'<' if m['hi_open'] else '<='} {m['hi']}")
    return " and ".join(parts)


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _check_value(path: str, value, f: dataclasses.Field, ftype):
    """Type-check (int -> float allowed) and range-check one value; returns it normalized."""
    if typing.get_origin(ftype) is tuple:
        args = typing.get_args(ftype)
        if (
            not isinstance(value, (list, tuple))
            or len(value) != len(args)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"{path} = {_describe(value)}: expected a list of {len(args)} numbers")
        value = tuple(float(v) for v in value)
        if not all(math.isfinite(v) for v in value):
            raise ConfigError(f"{path} = {_describe(value)}: expected finite numbers (no nan or inf)")
        for v in value:
            _check_range(path, v, f, shown=value)
        return value
    given = value
    if ftype is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, ftype) and (ftype is bool or not isinstance(value, bool))
    if not ok:
        raise ConfigError(
            f"{path} = {_describe(value)}: expected {_TYPE_NAMES[ftype]}, got {type(value).__name__}"
        )
    if ftype is float and not math.isfinite(value):
        raise ConfigError(f"{path} = {value!r}: expected a finite number")
    _check_range(path, value, f, shown=given)
    return value


def _check_range(path, value, f, shown=None):
    m = f.metadata
    bad = (
        m.get("choices")
        and value not in m["choices"]
        or m.get("lo") is not None
        and (value <= m["lo"] if m["lo_open"] else value < m["lo"])
        or m.get("hi") is not None
        and (value >= m["hi"] if m["hi_open"] else value > m["hi"])
    )
    if bad:
        raise ConfigError(
            f"{path} = {_describe(shown if shown is not None else value)}: must be {_allowed(f)}"
        )


class _Section:
    """Validation shared by every config dataclass: types and ranges in ``__post_init__``, so a
    dataclass built in code (e.g. by the scikit-learn estimator) is checked like one read from TOML."""

    _path = ""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            path = f"{self._path}.{f.name}" if self._path else f.name
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                if not isinstance(value, hints[f.name]):
                    raise ConfigError(f"{path}: expected a {hints[f.name].__name__} table")
                continue
            if f.name == "layers":
                continue
            object.__setattr__(self, f.name, _check_value(path, value, f, hints[f.name]))
        self._check()

    def _check(self):
        """Checks that involve several fields."""


@dataclass(frozen=True)
class AugmentConfig(_Section):
    """Random transforms of training images (off by default)."""

    _path = "data.augment"
    shift: int = _spec(0, lo=0, hi=4, doc="largest random shift, in whole pixels")
    rotate: float = _spec(0.0, lo=0.0, hi=90.0, doc="largest random rotation, in degrees")
    scale: float = _spec(0.0, lo=0.0, hi=0.5, hi_open=True, doc="largest random zoom change, a fraction")
    horizontal_flip: bool = _spec(False, doc="mirror left-right with probability 1/2 (photos, not digits)")
    pad_crop: int = _spec(0, lo=0, hi=16, doc="pad each side by this many pixels, then crop at random")
    cutout: int = _spec(0, lo=0, hi=64, doc="side of a random square set to the mean; 0 = off")


@dataclass(frozen=True)
class DataConfig(_Section):
    """Where the images come from and how they are split and scaled."""

    _path = "data"
    source: str = _spec("digits", choices=SOURCES)
    path: str = _spec("", doc=".npz file with X and y (source = 'npz')")
    test_path: str = _spec("", doc="optional .npz test file (source = 'npz')")
    images: str = _spec("", doc="IDX images file, raw or .gz (source = 'idx')")
    labels: str = _spec("", doc="IDX labels file (source = 'idx')")
    test_images: str = _spec("", doc="optional IDX test images")
    test_labels: str = _spec("", doc="optional IDX test labels")
    test_fraction: float = _spec(0.2, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    val_fraction: float = _spec(
        0.1, lo=0.0, hi=1.0, hi_open=True, doc="of the part left after the test split"
    )
    split_seed: int = _spec(0, lo=0, hi=2**32 - 1)
    standardize: bool = _spec(True, doc="per-channel mean 0, std 1, from the training split")
    cache_dir: str = _spec(
        "", doc="downloads go to <cache_dir>/<source>/ (default $MINICNN_DATA, else ~/.cache/minicnn)"
    )
    base_url: str = _spec(
        "", doc="fetch <base_url>/<file> instead of the pinned URLs (default $MINICNN_DATA_URL)"
    )
    download_deadline_s: float = _spec(
        1800.0, lo=0.0, lo_open=True, doc="give up on a file's transfer after this many seconds"
    )
    download_min_rate: float = _spec(
        1024.0, lo=0.0, doc="give up on a transfer slower than this (bytes/s) after its first 30 s"
    )
    augment: AugmentConfig = _spec(AugmentConfig())


@dataclass(frozen=True)
class ModelConfig(_Section):
    """The layers in order, as ``{"type": "Conv2D", ...}`` dicts (checked by ``build_model``)."""

    _path = "model"
    layers: tuple = _spec(())
    dtype: str = _spec("float32", choices=("float32", "float64"))

    def _check(self):
        if not isinstance(self.layers, (list, tuple)) or not self.layers:
            raise ConfigError("model.layers: expected at least one [[model.layers]] table")
        for i, layer in enumerate(self.layers):
            _check_layer_table(layer, f"model.layers[{i}]")
        object.__setattr__(self, "layers", tuple(dict(layer) for layer in self.layers))


def _check_layer_table(layer, where: str) -> None:
    """One ``[[model.layers]]`` table, and the layer tables nested in it (a Residual's ``body``)."""
    if not isinstance(layer, dict):
        raise ConfigError(f"{where} = {_describe(layer)}: expected a table with a 'type' key")
    if not isinstance(layer.get("type"), str):
        raise ConfigError(f"{where}.type: expected a layer name string, got {_describe(layer.get('type'))}")
    for key, value in layer.items():
        if not _finite(value):
            raise ConfigError(f"{where}.{key} = {value!r}: expected finite numbers")
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for j, item in enumerate(value):
                _check_layer_table(item, f"{where}.{key}[{j}]")
        elif isinstance(value, dict):
            _check_layer_table(value, f"{where}.{key}")


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The optimization: epochs, batches, optimizer, schedule, regularization, early stopping."""

    _path = "train"
    epochs: int = _spec(30, lo=1, hi=100_000)
    batch_size: int = _spec(32, lo=1, hi=1_000_000)
    optimizer: str = _spec("adam", choices=tuple(OPTIMIZERS))
    lr: float = _spec(1e-3, lo=0.0, hi=10.0, lo_open=True)
    weight_decay: float = _spec(0.0, lo=0.0, hi=1.0, doc="L2 for sgd/adam, decoupled for adamw")
    momentum: float = _spec(0.9, lo=0.0, hi=1.0, hi_open=True, doc="sgd only")
    nesterov: bool = _spec(False, doc="sgd only")
    betas: tuple[float, float] = _spec((0.9, 0.999), lo=0.0, hi=1.0, hi_open=True, doc="adam/adamw only")
    schedule: str = _spec("constant", choices=SCHEDULES, doc="learning rate per epoch")
    warmup_epochs: int = _spec(0, lo=0, doc="cosine: linear warm-up epochs (a shorter run ends in it)")
    min_lr_factor: float = _spec(0.0, lo=0.0, hi=1.0, doc="cosine: final lr / lr")
    step_size: int = _spec(10, lo=1, doc="step: epochs between decays")
    gamma: float = _spec(0.1, lo=0.0, hi=1.0, lo_open=True, doc="step: decay factor")
    clip_grad_norm: float = _spec(0.0, lo=0.0, doc="largest global gradient norm; 0 = no clipping")
    label_smoothing: float = _spec(0.0, lo=0.0, hi=1.0, hi_open=True)
    patience: int = _spec(
        0, lo=0, doc="stop after this many epochs without a better validation score; 0 = never"
    )
    keep: str = _spec(
        "best",
        choices=KEEP,
        doc="the weights kept at the end: the best validation epoch's, or the last epoch's",
    )
    threads: int = _spec(
        0,
        lo=0,
        hi=4096,
        doc="threads of NumPy's matrix products; 0 = automatic: the cores "
        "that other processes leave free, rechecked after every epoch",
    )
    memory_budget_mib: int = _spec(
        0,
        lo=0,
        hi=2**40,
        doc="largest model + one batch's activations, or data file, in MiB; 0 = half the machine's memory",
    )
    device: str = _spec(
        "cpu",
        choices=DEVICES,
        doc="where to train: NumPy on the host, or a GPU through CuPy; files always hold NumPy arrays",
    )

    def _check(self):
        if self.nesterov and self.optimizer != "sgd":
            raise ConfigError(
                f'train.nesterov = true: only for train.optimizer = "sgd", not {self.optimizer!r}'
            )
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ConfigError("train.nesterov = true: needs train.momentum > 0")


@dataclass(frozen=True)
class OutputConfig(_Section):
    """Where runs go and whether figures are drawn."""

    _path = "output"
    dir: str = _spec("runs", doc="parent folder of run directories")
    figures: bool = _spec(True)


@dataclass(frozen=True)
class Config(_Section):
    """A whole training run."""

    model: ModelConfig
    seed: int = _spec(0, lo=0, hi=2**32 - 1, doc="model initialization, shuffling, augmentation, dropout")
    data: DataConfig = _spec(DataConfig())
    train: TrainConfig = _spec(TrainConfig())
    output: OutputConfig = _spec(OutputConfig())


# ----------------------------------------------------------------------------------------------
# dict <-> dataclasses
# ----------------------------------------------------------------------------------------------

# Names other libraries use for our keys, so a familiar spelling still gets a useful suggestion.
_ALIASES = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "max_epochs": "epochs",
    "bs": "batch_size",
    "optim": "optimizer",
    "lr_schedule": "schedule",
    "scheduler": "schedule",
    "warmup": "warmup_epochs",
    "grad_clip": "clip_grad_norm",
    "max_grad_norm": "clip_grad_norm",
    "smoothing": "label_smoothing",
    "early_stopping": "patience",
    "random_state": "seed",
    "output_dir": "dir",
    "out_dir": "dir",
    "layer": "layers",
    "type": "source",
}


def _unknown_key(path: str, key: str, valid) -> ConfigError:
    where = f"{path}.{key}" if path else key
    # a misspelled alias counts too: "lerning_rate" -> "learning_rate" -> "lr"
    candidates = list(valid) + [alias for alias, target in _ALIASES.items() if target in valid]
    close = difflib.get_close_matches(key.lower(), candidates, n=1, cutoff=0.6)
    close = [_ALIASES.get(close[0], close[0])] if close and close[0] not in valid else close
    hint = f" (did you mean {(path + '.' if path else '') + close[0]!r}?)" if close else ""
    section = f"[{path}]" if path else "the top level"
    return ConfigError(f"unknown key {where!r}{hint}; valid keys in {section}: {', '.join(valid)}")


def _build(cls, raw, path: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown_key(path, key, names)
        sub = f"{path}.{key}" if path else key
        kwargs[key] = _build(hints[key], value, sub) if dataclasses.is_dataclass(hints[key]) else value
    return cls(**kwargs)


def from_dict(raw: dict) -> Config:
    """Build and check a :class:`Config` from nested dicts (as ``tomllib`` returns them)."""
    if not isinstance(raw.get("model"), dict) or "layers" not in raw["model"]:
        raise ConfigError(
            'model.layers: missing; a config needs [[model.layers]] tables (type = "Conv2D", ...)'
        )
    return _build(Config, raw, "")


def to_dict(cfg) -> dict:
    """The config as nested dicts and lists (tuples become lists)."""
    out: dict[str, typing.Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif f.name == "layers":
            out[f.name] = [dict(layer) for layer in value]
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def flat_config(cfg) -> dict:
    """The config as ``{"train.lr": 0.1, "model.layers[0].type": "Conv2D", ...}``: one entry per
    setting, so two configs are compared key by key."""
    return _flatten(to_dict(cfg))


def _flatten(tree, prefix: str = "") -> dict:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; list items as ``key[i]``."""
    if isinstance(tree, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in tree.items()]
    elif isinstance(tree, list) and any(isinstance(v, dict) for v in tree):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(tree)]
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(_flatten(value, key))
    return flat


# ----------------------------------------------------------------------------------------------
# Overrides: --set key.path=value
# ----------------------------------------------------------------------------------------------


def _parse_toml_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _typed(path: str, text: str, ftype):
    """Parse an override's text as the field's type."""
    try:
        if ftype is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if ftype is int:
            return int(text)
        if ftype is float:
            return float(text)
        if ftype is str:
            value = _parse_toml_value(text) if text[:1] in "\"'" else text
            return value if isinstance(value, str) else text
        return _parse_toml_value(text)  # tuples: a TOML array such as [0.9, 0.99]
    except RecursionError:
        raise ConfigError(f"--set {path}={_short(text)}: nested too deeply") from None
    except ValueError:
        expected = _TYPE_NAMES.get(ftype, "a TOML value")
        raise ConfigError(f"--set {path}={_short(text)}: expected {expected}") from None


def _set_layer_key(raw: dict, keys: list[str], path: str, text: str) -> None:
    """``model.layers.<index>.<key>=value``, or deeper in a block: ``model.layers.3.body.0.out_channels``."""
    model = raw.setdefault("model", {})
    if not isinstance(model, dict):
        raise ConfigError(f"--set {path}: model = {_describe(model)}, expected a [model] table")
    if len(keys) < 4 or len(keys) % 2 or not all(k.isdigit() for k in keys[2:-1:2]):
        raise ConfigError(
            f"--set {path}: layer keys are written model.layers.<index>.<key> "
            "(in a block: model.layers.<index>.body.<index>.<key>)"
        )
    table, where = model, "model"
    for name, index in zip(keys[1:-1:2], keys[2:-1:2]):
        layers = table.get(name) if isinstance(table, dict) else None
        if not isinstance(layers, list) or not all(isinstance(v, dict) for v in layers):
            raise ConfigError(f"--set {path}: {where}.{name} is not a list of layer tables")
        if int(index) >= len(layers):
            count = len(layers)
            raise ConfigError(
                f"--set {path}: there are {count} layers in {where}.{name} (indices 0 to {count - 1})"
            )
        table, where = layers[int(index)], f"{where}.{name}[{index}]"
    table[keys[-1]] = _parse_toml_value(text)


def apply_override(raw: dict, assignment: str) -> dict:
    """Apply ``"key.path=value"`` to the nested dict ``raw`` (in place; returned too).

    The value is parsed as the type of the field it sets (``train.lr=0.01`` a float,
    ``train.nesterov=true`` a bool). Layer keys are written ``model.layers.2.out_channels=64``
    (or ``model.layers[2].out_channels=64``) and parsed as TOML values.
    """
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value, e.g. train.lr=0.01")
    path, text = (part.strip() for part in assignment.split("=", 1))
    keys = path.replace("[", ".").replace("]", "").split(".")
    if keys[:2] == ["model", "layers"]:
        _set_layer_key(raw, keys, path, text)
        return raw
    cls: typing.Any = Config  # the section being descended into
    node = raw
    for depth, key in enumerate(keys):
        names = [f.name for f in dataclasses.fields(cls)]
        prefix = ".".join(keys[:depth])
        if key not in names:
            raise _unknown_key(prefix, key, names)
        ftype = typing.get_type_hints(cls)[key]
        if dataclasses.is_dataclass(ftype):
            if depth == len(keys) - 1:
                raise ConfigError(
                    f"--set {path}: [{path}] is a table; set one of its keys, "
                    f"e.g. {path}.{dataclasses.fields(ftype)[0].name}=..."
                )
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(keys[: depth + 1])}: expected a table")
            cls = ftype
        else:
            if depth != len(keys) - 1:
                raise ConfigError(f"--set {path}: {'.'.join(keys[: depth + 1])} is not a table")
            if key == "layers":
                raise ConfigError(f"--set {path}: set one layer's key, e.g. model.layers.0.out_channels=32")
            node[key] = _typed(path, text, ftype)
    return raw


def load_config(path, overrides=()) -> Config:
    """Read a TOML config, apply ``--set`` style overrides, check everything; return a :class:`Config`.

    Raises :class:`ConfigError` (a ValueError) for any problem, FileNotFoundError for a missing file.
    """
    path = os.fspath(path)
    try:
        with open_regular(path, "config file (TOML)") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such config file: {show_path(path)}") from None
    except NotAFileError as exc:
        raise ConfigError(str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{show_path(path)}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{show_path(path)}: not UTF-8 text: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{show_path(path)}: TOML nested too deeply") from None
    try:
        for assignment in overrides:
            apply_override(raw, assignment)
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{_blame(path, overrides, str(exc))}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{show_path(path)}: a value is nested too deeply") from None


def _finite(value) -> bool:
    """False for a NaN or infinite float anywhere in ``value`` (lists and tables included)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _blame(path: str, overrides, message: str) -> str:
    """Where a bad value came from: the ``--set`` whose key the message names, else the file."""
    for assignment in overrides:
        key = assignment.split("=", 1)[0].strip()
        parts = key.replace("[", ".").replace("]", "").split(".")
        if parts[:2] == ["model", "layers"] and len(parts) > 2:
            key = f"model.layers[{parts[2]}]" + "".join(f".{p}" for p in parts[3:])
        if message.startswith(key) or message.startswith(f"unknown key {key!r}"):
            return f"--set {_short(assignment.strip())}"
    return show_path(path)


def replace(cfg: Config, **changes) -> Config:
    """A copy of ``cfg`` with top-level fields changed (checked again)."""
    return dataclasses.replace(cfg, **changes)


# ----------------------------------------------------------------------------------------------
# Writing TOML (the standard library reads it but does not write it)
# ----------------------------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"cannot write {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise ConfigError(f"cannot write a {type(value).__name__} to TOML")


def _holds_layer_tables(value) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, dict) and "type" in v for v in value)
    return isinstance(value, dict) and "type" in value


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def to_toml(cfg: Config) -> str:
    """The config as TOML text that :func:`load_config` reads back to an equal config."""
    raw = to_dict(cfg)
    raw = {k: raw[k] for k in ("seed", "data", "model", "train", "output")}
    lines = []

    def table(name: str, values: dict):
        scalars = {k: v for k, v in values.items() if not isinstance(v, dict) and k != "layers"}
        if name:
            lines.append(f"\n[{name}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items())
        for key, value in values.items():
            if isinstance(value, dict):
                table(f"{name}.{key}" if name else key, value)
        for layer in values.get("layers", []):
            layer_table(f"{name}.layers", layer, "[[{}]]")

    def layer_table(path: str, layer: dict, header: str):
        """A layer's table; nested layer tables (a Residual's body) follow as tables of their own."""
        nested = {k: v for k, v in layer.items() if _holds_layer_tables(v)}
        lines.append("\n" + header.format(path))
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in layer.items() if k not in nested)
        for key, value in nested.items():
            for item in value if isinstance(value, list) else [value]:
                layer_table(f"{path}.{_toml_key(key)}", item, "[[{}]]" if isinstance(value, list) else "[{}]")

    table("", raw)
    return "\n".join(lines).lstrip("\n") + "\n"
