"""minicnn.data: loaders (IDX, npz), the split, standardization, batches, augmentation."""

import gzip
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from minicnn import data
from minicnn.data import DataError
from minicnn.train.config import AugmentConfig, DataConfig


@pytest.fixture(scope="module")
def digits():
    return data.load_digits_arrays()


def _tiny_images(n=40, h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, h, w), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 4


# --- digits and the split --------------------------------------------------------------------------


def test_digits_are_float32_nchw_in_unit_range(digits):
    X, y = digits
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))


def test_default_test_split_equals_scikit_learns(digits):
    X, y = digits
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    ds = data.load_dataset(DataConfig(standardize=False))
    np.testing.assert_array_equal(ds.X_test, X_test)
    np.testing.assert_array_equal(ds.y_test, y_test)


def test_split_is_disjoint_complete_stratified_and_reproducible(digits):
    _, y = digits
    idx = data.split_indices(y, test_fraction=0.2, val_fraction=0.1, seed=3)
    together = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert len(together) == len(y) and set(together) == set(range(len(y)))
    assert len(idx["test"]) == 360 and len(idx["val"]) == 144
    overall = np.bincount(y) / len(y)
    for part in idx.values():
        share = np.bincount(y[part], minlength=10) / len(part)
        assert np.abs(share - overall).max() < 0.02
    again = data.split_indices(y, test_fraction=0.2, val_fraction=0.1, seed=3)
    for key in idx:
        np.testing.assert_array_equal(idx[key], again[key])
    other = data.split_indices(y, test_fraction=0.2, val_fraction=0.1, seed=4)
    assert not np.array_equal(np.sort(other["test"]), np.sort(idx["test"]))


def test_validation_split_does_not_change_the_test_split(digits):
    _, y = digits
    a = data.split_indices(y, 0.2, 0.0, 0)
    b = data.split_indices(y, 0.2, 0.25, 0)
    np.testing.assert_array_equal(a["test"], b["test"])
    assert len(a["val"]) == 0 and len(b["val"]) == 360


def test_standardization_uses_training_statistics_only():
    ds = data.load_dataset(DataConfig(standardize=True))
    assert abs(float(ds.X_train.mean())) < 1e-5
    assert abs(float(ds.X_train.std()) - 1) < 1e-4
    assert abs(float(ds.X_test.mean())) > 1e-5  # other splits use the training mean, not their own
    raw = data.load_dataset(DataConfig(standardize=False))
    np.testing.assert_allclose(ds.X_test, (raw.X_test - ds.mean[0]) / ds.std[0], rtol=1e-5, atol=1e-6)


# --- IDX ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_files_round_trip_raw_and_gzip(tmp_path, suffix):
    images, labels = _tiny_images()
    data.write_idx(tmp_path / f"img{suffix}", images)
    data.write_idx(tmp_path / f"lab{suffix}", labels)
    np.testing.assert_array_equal(data.read_idx(tmp_path / f"img{suffix}"), images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / f"lab{suffix}"), labels)
    if suffix:
        assert (tmp_path / f"img{suffix}").read_bytes()[:2] == b"\x1f\x8b"


def test_idx_dataset_with_separate_test_files(tmp_path):
    images, labels = _tiny_images(n=40)
    test_images, test_labels = _tiny_images(n=12, seed=1)
    for name, array in [
        ("tr-img.gz", images),
        ("tr-lab.gz", labels),
        ("te-img", test_images),
        ("te-lab", test_labels),
    ]:
        data.write_idx(tmp_path / name, array)
    cfg = DataConfig(
        source="idx",
        images=str(tmp_path / "tr-img.gz"),
        labels=str(tmp_path / "tr-lab.gz"),
        test_images=str(tmp_path / "te-img"),
        test_labels=str(tmp_path / "te-lab"),
        val_fraction=0.25,
        standardize=False,
    )
    ds = data.load_dataset(cfg)
    assert ds.input_shape == (1, 6, 5) and ds.num_classes == 4
    assert len(ds.y_train) == 30 and len(ds.y_val) == 10
    np.testing.assert_allclose(ds.X_test[:, 0], test_images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, test_labels)


def test_idx_bad_magic_truncation_and_length_mismatch_are_reported(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(tmp_path / "junk")
    images, labels = _tiny_images()
    data.write_idx(tmp_path / "img", images)
    (tmp_path / "short").write_bytes((tmp_path / "img").read_bytes()[:-7])
    with pytest.raises(DataError, match="declares shape"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"abc")[:-4])
    with pytest.raises(DataError):
        data.read_idx(tmp_path / "bad.gz")
    data.write_idx(tmp_path / "lab", labels[:-1])
    cfg = DataConfig(source="idx", images=str(tmp_path / "img"), labels=str(tmp_path / "lab"))
    with pytest.raises(DataError, match="40 images but 39 labels"):
        data.load_dataset(cfg)
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "missing")


def test_idx_source_without_paths_names_the_missing_key():
    with pytest.raises(DataError, match="data.images"):
        data.load_dataset(DataConfig(source="idx"))


# --- npz ----------------------------------------------------------------------------------------------


def test_npz_dataset_loads_and_checks(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((30, 2, 4, 4)).astype(np.float64)
    y = np.repeat(np.arange(3), 10)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ds = data.load_dataset(
        DataConfig(
            source="npz", path=str(tmp_path / "d.npz"), test_fraction=0.2, val_fraction=0.0, standardize=False
        )
    )
    assert ds.input_shape == (2, 4, 4) and ds.X_train.dtype == np.float32 and ds.num_classes == 3
    assert len(ds.y_test) == 6 and np.bincount(ds.y_test).tolist() == [2, 2, 2]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"X": np.zeros((5, 4, 4))}, "missing \\['y'\\]"),
        ({"X": np.zeros((5, 4)), "y": np.zeros(5, int)}, "expected images of shape"),
        ({"X": np.zeros((5, 4, 4)), "y": np.zeros(4, int)}, "5 images but 4 labels"),
        ({"X": np.zeros((5, 4, 4)), "y": -np.ones(5, int)}, "labels must be >= 0"),
        ({"X": np.zeros((5, 4, 4)), "y": np.full(5, 0.5)}, "labels must be integers"),
        ({"X": np.full((5, 4, 4), np.nan), "y": np.zeros(5, int)}, "NaN"),
        ({"X": np.full((5, 4, 4), 300), "y": np.zeros(5, int)}, "\\[0, 255\\]"),
        ({"X": np.array([[["a"]]] * 5), "y": np.zeros(5, int)}, "dtype"),
    ],
)
def test_npz_bad_arrays_raise_clear_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        data.load_dataset(DataConfig(source="npz", path=str(tmp_path / "bad.npz")))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "p.npz", X=np.array([object()], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DataError, match="pickle"):
        data.read_npz_xy(tmp_path / "p.npz")


# --- batches and augmentation ----------------------------------------------------------------------


def test_batches_cover_every_sample_and_keep_the_last_partial_batch():
    batches = list(data.batch_indices(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    again = list(data.batch_indices(10, 4, np.random.default_rng(0)))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert np.concatenate(list(data.batch_indices(5, 2))).tolist() == [0, 1, 2, 3, 4]


def test_random_shift_moves_a_pixel_by_at_most_max_shift():
    X = np.zeros((200, 1, 7, 7), dtype=np.float32)
    X[:, 0, 3, 3] = 1.0
    out = data.random_shift(X, 2, np.random.default_rng(0))
    assert out.shape == X.shape and out.dtype == X.dtype
    rows, cols = np.nonzero(out[:, 0].reshape(200, 7, 7).sum(axis=0))
    assert set(rows) == {1, 2, 3, 4, 5} and set(cols) == {1, 2, 3, 4, 5}
    np.testing.assert_array_equal(out.sum(axis=(1, 2, 3)), 1.0)  # nothing falls off a 2-pixel margin


def test_shift_fills_with_the_background_of_standardized_images():
    X = np.full((50, 1, 4, 4), -0.5, dtype=np.float32)
    X[:, :, 1:3, 1:3] = 2.0
    out = data.random_shift(X, 1, np.random.default_rng(1))
    assert set(np.unique(out)) == {-0.5, 2.0}


def test_augmentation_keeps_shapes_dtypes_and_is_identity_when_off(digits):
    X = digits[0][:64]
    rng = np.random.default_rng(0)
    assert data.augment(X, AugmentConfig(), rng) is X
    np.testing.assert_allclose(data.random_affine(X, 0.0, 0.0, rng), X, atol=1e-6)
    out = data.augment(X, AugmentConfig(shift=1, rotate=15.0, scale=0.1), rng)
    assert out.shape == X.shape and out.dtype == X.dtype
    assert not np.array_equal(out, X)
    assert out.min() >= 0.0 - 1e-6 and out.max() <= 1.0 + 1e-6  # bilinear: no overshoot
    again = data.augment(X, AugmentConfig(shift=1, rotate=15.0, scale=0.1), np.random.default_rng(5))
    twice = data.augment(X, AugmentConfig(shift=1, rotate=15.0, scale=0.1), np.random.default_rng(5))
    np.testing.assert_array_equal(again, twice)


def test_rotation_by_ninety_degrees_rotates_the_image():
    X = np.zeros((1, 1, 5, 5), dtype=np.float32)
    X[0, 0, 0, 2] = 1.0  # top middle
    rng = SimpleNamespace(uniform=lambda lo, hi, size: np.full(size, hi))
    out = data.random_affine(X, 90.0, 0.0, rng)
    assert np.unravel_index(out[0, 0].argmax(), (5, 5)) in {(2, 0), (2, 4)}
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-5)
