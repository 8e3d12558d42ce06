"""minicnn.io: atomic writes that respect the umask and never follow links; .npz reading that checks
declared sizes before allocating and never unpickles; the safetensors reader and writer, and
Sequential.save / load of ``.safetensors`` files: exact round trips, files exchanged both ways with the
safetensors package's NumPy API, and malformed headers rejected before any tensor memory is asked for."""

import io
import json
import os
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minicnn import io as mio
from minicnn.io import SAFETENSORS_DTYPES, FileFormatError, read_safetensors, write_safetensors
from minicnn.nn.model import Sequential
from minicnn.train.build import build_model


def _npz_with_header(path, shape, dtype="<f4", payload=b"", compress=zipfile.ZIP_STORED):
    """A .npz whose single member declares ``shape`` but holds only ``payload`` after the header."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        archive.writestr("X.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + payload)


def test_round_trip_keeps_values_dtypes_and_fortran_order(tmp_path):
    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.asfortranarray(np.eye(3)),
        "c": np.array("text"),
    }
    mio.save_npz_atomic(tmp_path / "x.npz", arrays)
    back = mio.load_npz(tmp_path / "x.npz")
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == value.dtype


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_permissions_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        mio.save_npz_atomic(tmp_path / "w.npz", {"a": np.zeros(2)})
        mio.write_text_atomic(tmp_path / "t.txt", "hi\n")
    finally:
        os.umask(old)
    for name in ("w.npz", "t.txt"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask


def test_a_planted_temporary_link_is_neither_followed_nor_kept(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".tmp-metrics.json").symlink_to(outside)
    (run / ".tmp-abc.npz").write_bytes(b"half a save")
    mio.write_text_atomic(run / "metrics.json", "{}")
    assert outside.read_text() == "precious"
    assert sorted(mio.remove_stale_temporaries(run)) == [".tmp-abc.npz", ".tmp-metrics.json"]
    assert outside.read_text() == "precious" and sorted(os.listdir(run)) == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.npz"
    mio.save_npz_atomic(target, {"a": np.ones(3)})
    with pytest.raises(ValueError):
        mio.save_npz_atomic(target, {"a": np.array([None, 1], dtype=object)})  # refused: it would pickle
    np.testing.assert_array_equal(mio.load_npz(target)["a"], np.ones(3))
    assert os.listdir(tmp_path) == ["model.npz"]


def test_a_huge_declared_shape_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    _npz_with_header(path, (10**11, 8, 8), payload=b"\0" * 1024)
    with pytest.raises(mio.FileFormatError, match=r"declares shape \(100000000000, 8, 8\)"):
        mio.load_npz(path)


def test_a_member_that_inflates_past_the_budget_is_refused(tmp_path):
    path = tmp_path / "bomb.npz"
    _npz_with_header(
        path, (4 * 2**20,), dtype="|u1", payload=b"\0" * (4 * 2**20), compress=zipfile.ZIP_DEFLATED
    )
    assert path.stat().st_size < 2**16
    with pytest.raises(mio.FileFormatError, match="above the memory budget"):
        mio.load_npz(path, budget=2**20)


@pytest.mark.parametrize(
    "content, message",
    [
        (os.urandom(256), "not a zip archive"),
        (b"\x80\x04\x95" + os.urandom(64), "pickled object"),
        (b"", "not a zip archive"),
    ],
)
def test_foreign_bytes_get_a_message_that_says_what_they_are(tmp_path, content, message):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(mio.FileFormatError, match=message):
        mio.load_npz(path)


def test_truncated_archives_and_object_arrays_are_format_errors(tmp_path):
    good = tmp_path / "good.npz"
    mio.save_npz_atomic(good, {"a": np.arange(1000.0)})
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:600])
    with pytest.raises(mio.FileFormatError, match="cut.npz"):
        mio.load_npz(cut)
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(mio.FileFormatError, match="pickled objects"):
        mio.load_npz(pickled)


def test_paths_with_control_characters_print_on_one_line():
    assert mio.show_path("a\x00b\nc") == "a\\x00b\\nc"
    assert mio.show_path("plain/ünïcode.npz") == "plain/ünïcode.npz"


def test_the_budget_can_be_set_and_reset():
    mio.set_memory_budget(1234)
    try:
        assert mio.memory_budget() == 1234
        with pytest.raises(MemoryError, match="above the memory budget"):
            mio.check_budget(10**6, "layer 0")
    finally:
        mio.set_memory_budget(None)
    assert mio.memory_budget() == mio.machine_memory() // 2
    with pytest.raises(ValueError, match="positive number of bytes"):
        mio.set_memory_budget(0)


#: Every layer type, so every parameter and buffer layout goes through the file.
EVERY_LAYER = [
    {"type": "Conv2D", "out_channels": 4, "kernel_size": 3, "padding": "same"},
    {"type": "BatchNorm2D"},
    {"type": "LeakyReLU", "negative_slope": 0.1},
    {"type": "MaxPool2D", "kernel_size": 2},
    {"type": "Conv2D", "out_channels": 6, "kernel_size": 2, "bias": False},
    {"type": "Tanh"},
    {"type": "AvgPool2D", "kernel_size": 2, "stride": 1, "padding": 1},
    {"type": "Sigmoid"},
    {"type": "Conv2D", "out_channels": 5, "kernel_size": 1},
    {"type": "ReLU"},
    {"type": "GlobalAvgPool2D"},
    {"type": "Flatten"},
    {"type": "Dropout", "p": 0.2},
    {"type": "Dense", "out_features": 3},
]


def trained_looking(dtype=np.float32, seed=0) -> Sequential:
    """A model of every layer type whose BatchNorm statistics are not the initial zeros and ones."""
    model = build_model(EVERY_LAYER, (2, 8, 8), dtype=dtype, rng=seed)
    rng = np.random.default_rng(seed)
    model.train()
    model.forward(rng.normal(size=(4, 2, 8, 8)).astype(dtype))  # updates the running statistics
    model.layers[4].freeze()
    return model


# --- Sequential.save / load ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_is_exact(dtype, tmp_path):
    model = trained_looking(dtype)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = Sequential.load(path)
    assert loaded.architecture() == model.architecture()
    before, after = model.state_dict(), loaded.state_dict()
    assert list(after) == list(before)
    for name in before:
        assert after[name].dtype == before[name].dtype and np.array_equal(after[name], before[name]), name
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in model.parameters()]
    X = np.random.default_rng(1).normal(size=(5, 2, 8, 8)).astype(dtype)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_a_nested_model_round_trips_with_nested_keys(tmp_path):
    inner = build_model(EVERY_LAYER[:4], (2, 8, 8), rng=6)
    model = Sequential(inner, build_model(EVERY_LAYER[4:], (4, 4, 4), rng=7))
    model.save(tmp_path / "nested.safetensors")
    assert "0.1.running_mean" in safetensors.numpy.load_file(tmp_path / "nested.safetensors")
    loaded = Sequential.load(tmp_path / "nested.safetensors")
    X = np.random.default_rng(3).normal(size=(2, 2, 8, 8)).astype(np.float32)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_the_file_is_safetensors_with_pytorch_keys_and_layouts(tmp_path):
    model = trained_looking()
    path = tmp_path / "model.safetensors"
    model.save(path)
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert length % 8 == 0 and 8 + length + max(
        e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"
    ) == len(raw)
    assert header["0.weight"] == {"dtype": "F32", "shape": [4, 2, 3, 3], "data_offsets": [0, 4 * 72]}
    begin, end = header["0.weight"]["data_offsets"]
    kernels = np.frombuffer(raw[8 + length + begin : 8 + length + end], "<f4").reshape(4, 2, 3, 3)
    assert np.array_equal(kernels, model.layers[0].weight.data)  # OIHW, little-endian, C order
    assert json.loads(header["__metadata__"]["__architecture__"])["layers"] == model.architecture()
    assert set(header) - {"__metadata__"} == set(model.state_dict()) >= {"1.running_mean", "13.weight"}


def test_safetensors_package_reads_what_minicnn_writes(tmp_path):
    model = trained_looking()
    path = tmp_path / "model.safetensors"
    model.save(path)
    theirs = safetensors.numpy.load_file(path)
    ours = model.state_dict()
    assert theirs.keys() == ours.keys()
    for name in ours:
        assert theirs[name].dtype == ours[name].dtype and np.array_equal(theirs[name], ours[name]), name
    with safetensors.safe_open(path, framework="np") as handle:
        meta = json.loads(handle.metadata()["__architecture__"])
    assert meta["format"] == "minicnn.Sequential/1" and meta["frozen"] == ["4.weight"]


def test_minicnn_loads_a_model_the_safetensors_package_wrote(tmp_path):
    model = trained_looking(seed=3)
    path = tmp_path / "theirs.safetensors"
    arch = json.dumps({"format": "minicnn.Sequential/1", "layers": model.architecture(), "frozen": []})
    safetensors.numpy.save_file(model.state_dict(), path, metadata={"__architecture__": arch})
    loaded = Sequential.load(path)
    X = np.random.default_rng(2).normal(size=(3, 2, 8, 8)).astype(np.float32)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_a_safetensors_file_without_an_architecture_is_not_a_model(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.numpy.save_file({"0.weight": np.zeros((2, 1, 3, 3), np.float32)}, path)
    with pytest.raises(ValueError, match="not a minicnn model file"):
        Sequential.load(path)


def test_npz_names_still_write_npz(tmp_path):
    model = trained_looking()
    model.save(tmp_path / "model.npz")
    assert (tmp_path / "model.npz").read_bytes()[:2] == b"PK"
    assert np.array_equal(
        Sequential.load(tmp_path / "model.npz").layers[0].weight.data, model.layers[0].weight.data
    )


# --- read_safetensors / write_safetensors ----------------------------------------------------------------
DTYPES = [np.dtype(code) for code in SAFETENSORS_DTYPES.values()]


@st.composite
def tensor_dicts(draw):
    names = draw(
        st.lists(
            st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).filter(
                lambda s: s != "__metadata__"
            ),
            max_size=4,
            unique=True,
        )
    )
    return {
        name: draw(
            hnp.arrays(
                st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
            )
        )
        for name in names
    }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name


@settings(max_examples=40, deadline=None)
@given(tensors=tensor_dicts(), metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
def test_every_dtype_and_shape_round_trips_through_both_implementations(tensors, metadata, tmp_path_factory):
    folder = tmp_path_factory.mktemp("st")
    write_safetensors(folder / "ours.safetensors", tensors, metadata)
    assert_same(safetensors.numpy.load_file(folder / "ours.safetensors"), tensors)
    read, read_meta = read_safetensors(folder / "ours.safetensors")
    assert_same(read, tensors) and read_meta == metadata
    safetensors.numpy.save_file(tensors, folder / "theirs.safetensors", metadata=metadata or None)
    read, read_meta = read_safetensors(folder / "theirs.safetensors")
    assert_same(read, tensors)
    assert read_meta == metadata


def test_every_tensor_starts_at_a_multiple_of_its_item_size(tmp_path):
    tensors = {
        "odd": np.ones(3, np.uint8),
        "f64": np.ones(2, np.float64),
        "f16": np.ones(1, np.float16),
        "i32": np.ones(3, np.int32),
    }
    write_safetensors(tmp_path / "a.safetensors", tensors)
    raw = (tmp_path / "a.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert (8 + length) % 8 == 0
    assert [name for name, _ in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"])] == [
        "f64",
        "i32",
        "f16",
        "odd",
    ]
    for name, entry in header.items():
        assert entry["data_offsets"][0] % tensors[name].dtype.itemsize == 0, name


def test_big_endian_arrays_are_stored_little_endian(tmp_path):
    values = np.arange(6, dtype=">i4").reshape(2, 3)
    write_safetensors(tmp_path / "be.safetensors", {"x": values})
    assert_same(safetensors.numpy.load_file(tmp_path / "be.safetensors"), {"x": values.astype("<i4")})


@pytest.mark.parametrize("bad", [np.zeros(2, np.complex64), np.array(["a"]), np.zeros(2, object)])
def test_unstorable_dtypes_are_refused_and_nothing_is_written(bad, tmp_path):
    with pytest.raises(ValueError, match="cannot store 'x'"):
        write_safetensors(tmp_path / "x.safetensors", {"x": bad})
    assert os.listdir(tmp_path) == []


def test_metadata_values_must_be_strings(tmp_path):
    with pytest.raises(TypeError, match="metadata"):
        write_safetensors(tmp_path / "x.safetensors", {}, {"epochs": 3})


# --- malformed files --------------------------------------------------------------------------------------
def file_with(tmp_path, header, data: bytes = b"", length: int | None = None):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


MALFORMED = {
    "length beyond the file": ({"a": entry()}, bytes(8), 10**6, "header length 1000000"),
    "huge length": ({"a": entry()}, bytes(8), 2**63, "exceeds what the file holds"),
    "not json": (b"{nope", b"", None, "not UTF-8 JSON"),
    "not an object": (b"[1, 2]", b"", None, "must be a JSON object"),
    "offset past the end": ({"a": entry(offsets=(0, 16))}, bytes(8), None, r"end <= 8"),
    "offsets reversed": ({"a": entry(offsets=(8, 0))}, bytes(8), None, "data_offsets must be"),
    "negative offset": ({"a": entry(offsets=(-8, 0))}, bytes(8), None, "data_offsets must be"),
    "overlap": ({"a": entry(offsets=(0, 8)), "b": entry(offsets=(4, 12))}, bytes(12), None, "overlaps 'a'"),
    "gap": ({"a": entry(offsets=(8, 16))}, bytes(16), None, "bytes 0..8 of the data belong to no tensor"),
    "trailing bytes": ({"a": entry()}, bytes(12), None, "cover 8 bytes, but the file holds 12"),
    "unknown dtype": ({"a": entry(dtype="BF16", offsets=(0, 4))}, bytes(4), None, "unknown dtype 'BF16'"),
    "made-up dtype": ({"a": entry(dtype="Q7")}, bytes(8), None, "unknown dtype 'Q7'"),
    "huge shape": ({"a": entry(shape=(2**40, 2**40))}, bytes(8), None, f"needs {4 * 2**80} bytes"),
    "huge shape and offsets": (
        {"a": entry(shape=(10**12,), offsets=(0, 4 * 10**12))},
        bytes(8),
        None,
        "data_offsets must be",
    ),
    "shape and size disagree": ({"a": entry(shape=(3,))}, bytes(8), None, "needs 12 bytes"),
    "negative shape": ({"a": entry(shape=(-2,))}, bytes(8), None, "non-negative ints"),
    "float shape": ({"a": entry(shape=(2.0,))}, bytes(8), None, "non-negative ints"),
    "missing field": ({"a": {"dtype": "F32", "shape": [2]}}, bytes(8), None, "expected {'dtype'"),
    "metadata not strings": ({"__metadata__": {"epochs": 3}}, b"", None, "__metadata__ must map strings"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_value_error_before_allocating(case, tmp_path):
    header, data, length, message = MALFORMED[case]
    path = file_with(tmp_path, header, data, length)
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=message) as info:
            read_safetensors(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{case}: {peak} bytes traced"
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("size", [0, 3, 7])
def test_a_file_shorter_than_the_length_field_is_rejected(size, tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(bytes(size))
    with pytest.raises(FileFormatError, match=f"the file has {size} bytes"):
        read_safetensors(path)


def test_sequential_load_of_a_malformed_file_is_a_value_error(tmp_path):
    path = file_with(tmp_path, {"a": entry(offsets=(0, 16))}, bytes(8))
    with pytest.raises(ValueError, match="data_offsets"):
        Sequential.load(path)


def test_links_are_not_followed(tmp_path):
    write_safetensors(tmp_path / "real.safetensors", {"x": np.ones(2, np.float32)})
    os.symlink(tmp_path / "real.safetensors", tmp_path / "link.safetensors")
    with pytest.raises(FileFormatError, match="a link"):
        read_safetensors(tmp_path / "link.safetensors")


def test_a_folder_is_not_a_safetensors_file(tmp_path):
    with pytest.raises(FileFormatError, match="is a folder; expected a safetensors file"):
        read_safetensors(tmp_path)


def test_tensors_past_the_memory_budget_are_refused_before_reading(tmp_path):
    write_safetensors(tmp_path / "big.safetensors", {"x": np.zeros(1000, np.float32)})
    with pytest.raises(FileFormatError, match="above the memory budget"):
        read_safetensors(tmp_path / "big.safetensors", budget=3999)
    assert read_safetensors(tmp_path / "big.safetensors", budget=4000)[0]["x"].shape == (1000,)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_safetensors(tmp_path / "nothing.safetensors")


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10**6), value=st.integers(0, 255), cut=st.integers(0, 10**6))
def test_corrupted_bytes_give_a_value_error_or_the_right_arrays(position, value, cut, tmp_path_factory):
    """Any one changed byte, or a truncation, either still reads (a changed tensor byte or name) into
    arrays that exactly tile the data section, or raises FileFormatError; never another exception."""
    folder = tmp_path_factory.mktemp("fuzz")
    good = folder / "good.safetensors"
    write_safetensors(
        good, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.int64)}, {"k": "v"}
    )
    raw = bytearray(good.read_bytes())
    raw[position % len(raw)] = value
    bad = folder / "bad.safetensors"
    raw = bytes(raw[: len(raw) - cut % 9])
    bad.write_bytes(raw)
    try:
        tensors, _ = read_safetensors(bad)
    except FileFormatError:
        return
    (length,) = struct.unpack("<Q", raw[:8])
    assert sum(t.nbytes for t in tensors.values()) == len(raw) - 8 - length
