"""Fuzzing the boundaries where files and configs enter (issue 12): random and mutated configs, ``.npz``
files, IDX files, model files and checkpoints (truncated, bit-flipped, wrong types, nested, huge
declared shapes).

The property everywhere: success, or a clean error of the documented type (ConfigError, DataError,
FileFormatError: all ValueErrors; MemoryError for the budget) whose message is one line; never
another exception. The memory budget is 64 MiB here, so a declared size that slipped past the checks
would fail the run. ``HYPOTHESIS_PROFILE=long`` (tests/conftest.py) searches 50 times longer.
"""

import copy
import gzip
import io as bytes_io
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicnn import io
from minicnn.data.datasets import read_idx
from minicnn.nn.model import Sequential
from minicnn.train import RunDir, Trainer, build_model
from minicnn.train.config import TrainConfig, from_dict, load_config

ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = tomllib.loads((ROOT / "configs" / "digits_fast.toml").read_text())
SPECS = [
    {"type": "Conv2D", "out_channels": 2, "kernel_size": 3},
    {"type": "Dropout", "p": 0.5},
    {"type": "Flatten"},
    {"type": "Dense", "out_features": 3},
]
FUZZ = settings(
    max_examples=max(25, settings.default.max_examples // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def _small_budget():
    io.set_memory_budget(64 * 2**20)
    yield
    io.set_memory_budget(None)


def clean_or_success(action):
    """Run ``action``; a ValueError or MemoryError must carry a one-line message."""
    try:
        return action()
    except (ValueError, MemoryError) as exc:
        message = str(exc)
        assert message and "\n" not in message, repr(message)
        return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
toml_values = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
CONFIG_KEYS = [
    "seed",
    "data",
    "data.source",
    "data.test_fraction",
    "data.split_seed",
    "data.augment.shift",
    "model",
    "model.dtype",
    "model.layers",
    "train",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.optimizer",
    "train.betas",
    "train.nesterov",
    "train.memory_budget_mib",
    "output.dir",
    "output.figures",
    "nonsense",
]
LAYER_KEYS = [
    "type",
    "out_channels",
    "kernel_size",
    "padding",
    "stride",
    "p",
    "bias",
    "eps",
    "trainable",
    "x",
]


def _set(raw: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


def _build(cfg):
    return build_model(cfg.model.layers, (1, 8, 8), dtype=cfg.model.dtype, batch_size=cfg.train.batch_size)


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), toml_values), max_size=4),
    st.lists(st.tuples(st.integers(0, 4), st.sampled_from(LAYER_KEYS), toml_values), max_size=3),
)
def test_mutated_configs_are_built_or_refused_cleanly(changes, layer_changes):
    raw = copy.deepcopy(BASE_CONFIG)
    for key, value in changes:
        _set(raw, key, value)
    for index, key, value in layer_changes:
        model = raw.get("model")
        layers = model.get("layers") if isinstance(model, dict) else None
        if isinstance(layers, list) and index < len(layers) and isinstance(layers[index], dict):
            layers[index][key] = value
    cfg = clean_or_success(lambda: from_dict(raw))
    if cfg is not None:
        clean_or_success(lambda: _build(cfg))


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=3))
def test_random_overrides_are_applied_or_refused_cleanly(tmp_path_factory, assignments):
    path = ROOT / "configs" / "digits_fast.toml"
    clean_or_success(lambda: load_config(path, assignments))


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_random_config_files_are_read_or_refused_cleanly(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(content)
    clean_or_success(lambda: load_config(path))


def _npz_bytes(arrays) -> bytes:
    buffer = bytes_io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _mutate(data: bytes, cuts, flips) -> bytes:
    data = bytearray(data)
    for position, bit in flips:
        if data:
            data[position % len(data)] ^= 1 << bit
    return bytes(data[:cuts]) if cuts is not None else bytes(data)


flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=6)
mutations = st.tuples(st.none() | st.integers(0, 3000), flips)


@FUZZ
@given(
    mutations,
    st.sampled_from([np.float32, np.int64, np.uint8, np.complex64, np.bool_]),
    st.lists(st.integers(0, 5), min_size=0, max_size=3),
)
def test_mutated_npz_files_load_or_are_refused_cleanly(tmp_path_factory, mutation, dtype, shape):
    data = _npz_bytes({"X": np.ones(shape, dtype), "y": np.arange(3)})
    path = tmp_path_factory.mktemp("npz") / "f.npz"
    path.write_bytes(_mutate(data, *mutation))
    clean_or_success(lambda: io.load_npz(path))


@FUZZ
@given(
    st.integers(0, 0x10),
    st.lists(st.integers(0, 2**32 - 1), max_size=4),
    st.binary(max_size=64),
    st.booleans(),
)
def test_random_idx_files_load_or_are_refused_cleanly(tmp_path_factory, code, shape, payload, compress):
    data = bytes([0, 0, code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape) + payload
    path = tmp_path_factory.mktemp("idx") / ("f.gz" if compress else "f")
    path.write_bytes(gzip.compress(data) if compress else data)
    clean_or_success(lambda: read_idx(path))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    model = build_model(SPECS, (1, 6, 6), rng=0)
    model.save(folder / "model.npz")
    RunDir(folder).save_checkpoint(Trainer.from_config(model, TrainConfig(epochs=2, batch_size=4), 0))
    return {name: io.load_npz(folder / name) for name in ("model.npz", "last.npz")}


wrong_values = (
    json_values.map(lambda v: np.array(json.dumps(v)))
    | st.integers(-(2**62), 2**62).map(np.int64)
    | st.lists(st.floats(width=32), max_size=6).map(lambda v: np.array(v, np.float32))
    | st.just(np.zeros((2, 3), np.complex64))
)


@FUZZ
@given(st.sampled_from(["model.npz", "last.npz"]), st.data())
def test_mutated_models_and_checkpoints_load_or_are_refused_cleanly(tmp_path_factory, saved, name, data):
    arrays = dict(saved[name])
    keys = sorted(arrays)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(keys + ["extra"]))
        if data.draw(st.booleans()):
            arrays.pop(key, None)
        else:
            arrays[key] = data.draw(wrong_values)
    folder = tmp_path_factory.mktemp("mut")
    io.save_npz_atomic(folder / name, arrays)
    if name == "model.npz":
        clean_or_success(lambda: Sequential.load(folder / name))
    else:
        model = build_model(SPECS, (1, 6, 6), rng=0)
        trainer = Trainer.from_config(model, TrainConfig(epochs=2, batch_size=4), 0)
        clean_or_success(lambda: RunDir(folder).load_checkpoint(trainer))


@FUZZ
@given(json_values | st.integers(1, 300_000).map(lambda depth: "[" * depth + "]" * depth))
def test_random_architecture_records_load_or_are_refused_cleanly(tmp_path_factory, saved, record):
    arrays = dict(saved["model.npz"])
    arrays["__architecture__"] = np.array(record if isinstance(record, str) else json.dumps(record))
    path = tmp_path_factory.mktemp("arch") / "m.npz"
    io.save_npz_atomic(path, arrays)
    clean_or_success(lambda: Sequential.load(path))


@pytest.mark.parametrize("offset, value", [(8, 1), (10, 99)])  # encrypted flag; unknown compression
def test_npz_whose_central_directory_claims_encryption_or_unknown_compression_is_refused(
    tmp_path, offset, value
):
    """Found by the fuzzer: zipfile's RuntimeError and NotImplementedError used to escape."""
    data = bytearray(_npz_bytes({"X": np.ones(3, np.float32)}))
    entry = data.index(b"PK\x01\x02")
    data[entry + offset] = value
    path = tmp_path / "f.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(io.FileFormatError, match="f.npz is not a readable .npz file"):
        io.load_npz(path)
