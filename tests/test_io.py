"""minicnn.io: atomic writes that respect the umask and never follow links; .npz reading that checks
declared sizes before allocating and never unpickles."""

import io
import os
import zipfile

import numpy as np
import pytest

from minicnn import io as mio


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
