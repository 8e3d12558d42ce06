"""CNNClassifier: scikit-learn's own estimator checks, pipelines, cross-validation, grid search over joblib
processes, input errors, determinism, partial_fit, and agreement with train.py's training loop."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_blobs
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from minicnn.nn.model import Sequential
from minicnn.sklearn import CNNClassifier, default_layers
from minicnn.train import prepare
from minicnn.train.config import AugmentConfig, Config, DataConfig, ModelConfig, TrainConfig

#: Checks that cannot pass by nature, with the reason (listed in the README). None so far.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(
    [CNNClassifier(epochs=5, random_state=0)], expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS
)
def test_passes_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def small_cnn(c1=8, c2=16):
    """Two conv stages for 8x8 images; the last Dense's out_features comes from the data."""
    return [
        {"type": "Conv2D", "out_channels": c1, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "MaxPool2D", "kernel_size": 2},
        {"type": "Conv2D", "out_channels": c2, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "MaxPool2D", "kernel_size": 2},
        {"type": "Flatten"},
        {"type": "Dense"},
    ]


@pytest.fixture(scope="module")
def digits():
    """Digits as flattened rows in [0, 16] (scikit-learn's form) and the training issue's split."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def digits_small(digits):
    X_train, _, y_train, _ = digits
    return X_train[:400], y_train[:400]


@pytest.fixture(scope="module")
def fitted(digits):
    X_train, X_test, y_train, y_test = digits
    clf = CNNClassifier(layers=small_cnn(), epochs=6, learning_rate=3e-3, random_state=0)
    return clf.fit(X_train, np.array("zero one two three four five six seven eight nine".split())[y_train])


# --- fitted attributes and prediction ---------------------------------------------------------------


def test_fit_sets_the_fitted_attributes(fitted, digits):
    names = np.array("zero one two three four five six seven eight nine".split())
    assert list(fitted.classes_) == sorted(names)
    assert fitted.n_features_in_ == 64 and fitted.image_shape_ == (1, 8, 8)
    assert isinstance(fitted.model_, Sequential)
    assert fitted.model_.layers[0].weight.data.shape == (8, 1, 3, 3)  # the learned kernels
    assert fitted.layers_[-1] == {"type": "Dense", "out_features": 10}
    assert [r["epoch"] for r in fitted.history_] == [1, 2, 3, 4, 5, 6]
    assert fitted.history_[-1]["train_loss"] < fitted.history_[0]["train_loss"]
    assert fitted.best_epoch_ == 6
    _, X_test, _, y_test = digits
    assert fitted.score(X_test, names[y_test]) > 0.9


def test_predict_proba_rows_sum_to_one_and_agree_with_predict(fitted, digits):
    X_test = digits[1]
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(fitted.predict(X_test), fitted.classes_[proba.argmax(axis=1)])


def test_images_and_flattened_rows_give_the_same_model(digits_small):
    X, y = digits_small
    flat = CNNClassifier(layers=small_cnn(), epochs=2, random_state=3).fit(X, y)
    images = CNNClassifier(layers=small_cnn(), epochs=2, random_state=3).fit(X.reshape(-1, 1, 8, 8), y)
    assert images.image_shape_ == (1, 8, 8) and images.n_features_in_ == 64
    assert np.array_equal(flat.predict_proba(X), images.predict_proba(X.reshape(-1, 1, 8, 8)))
    assert np.array_equal(flat.predict_proba(X), images.predict_proba(X))  # rows are accepted too
    three_d = CNNClassifier(layers=small_cnn(), epochs=2, random_state=3).fit(X.reshape(-1, 8, 8), y)
    assert np.array_equal(flat.predict_proba(X), three_d.predict_proba(X))


def test_image_shape_is_inferred_for_square_and_other_feature_counts():
    X, y = make_blobs(n_samples=40, n_features=6, random_state=0)
    with pytest.warns(UserWarning, match=r"6 features are not a square image.*pass image_shape=\(C, H, W\)"):
        assert CNNClassifier(epochs=1).fit(X, y).image_shape_ == (1, 1, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a square count or a given shape: nothing to warn about
        assert CNNClassifier(epochs=1).fit(X[:, :4], y).image_shape_ == (1, 2, 2)
        assert CNNClassifier(epochs=1, image_shape=(2, 1, 3)).fit(X, y).image_shape_ == (2, 1, 3)


def test_default_layers_pool_only_while_the_feature_map_is_large_enough():
    types = lambda specs: [s["type"] for s in specs]  # noqa: E731
    assert types(default_layers((1, 8, 8))) == [
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Flatten",
        "Dense",
    ]
    assert types(default_layers((1, 4, 4))).count("MaxPool2D") == 1
    assert "MaxPool2D" not in types(default_layers((1, 1, 10)))


# --- determinism, cloning, pickling --------------------------------------------------------------------


def test_same_random_state_gives_bit_identical_predictions(digits_small):
    X, y = digits_small
    make = lambda seed: CNNClassifier(layers=small_cnn(), epochs=2, random_state=seed).fit(X, y)  # noqa: E731
    a, b, c = make(7), make(7), make(8)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_random_state_may_be_a_random_state_instance_and_numpy_scalars_are_accepted(digits_small):
    X, y = digits_small

    def make():
        return CNNClassifier(
            layers=small_cnn(),
            epochs=np.int64(1),
            learning_rate=np.float32(3e-3),
            random_state=np.random.RandomState(5),
        ).fit(X, y)

    assert np.array_equal(make().predict_proba(X), make().predict_proba(X))


def test_clone_keeps_hyperparameters_and_drops_the_fit(fitted):
    copy = clone(fitted)
    assert copy.get_params()["layers"] == fitted.get_params()["layers"]
    assert copy.get_params()["layers"] is not fitted.layers
    assert not hasattr(copy, "model_")


def test_pickled_estimator_predicts_the_same(fitted, digits):
    X_test = digits[1]
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(restored.predict_proba(X_test), fitted.predict_proba(X_test))


# --- input errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, X_shape, message",
    [
        (
            {"image_shape": (1, 4, 4)},
            (20, 64),
            r"image_shape=\(1, 4, 4\) needs 1\*4\*4 = 16 features .* X has 64",
        ),
        (
            {"image_shape": (1, 4, 4)},
            (20, 1, 8, 8),
            r"images of shape \(C, H, W\) = \(1, 8, 8\), but image_shape is",
        ),
        ({"image_shape": (1, 8)}, (20, 64), "image_shape must be None or"),
        ({"dtype": "float16"}, (20, 64), "dtype must be 'float32' or 'float64'"),
        ({"learning_rate": -1.0}, (20, 64), r"learning_rate = -1.0: must be > 0"),
        ({"optimizer": "adagrad"}, (20, 64), 'optimizer = "adagrad": must be one of'),
        (
            {"train_options": {"lr": 0.1}},
            (20, 64),
            r"train_options may not set \['lr'\]; .*\['learning_rate'\]",
        ),
        ({"train_options": {"label_smooth": 0.1}}, (20, 64), "train_options: .*label_smooth.*known keys"),
        ({"augment": {"shift": 9}}, (20, 64), "data.augment.shift = 9: must be"),
        (
            {
                "layers": [
                    {"type": "Conv2D", "out_channels": 4, "kernel_size": 3},
                    {"type": "Flatten"},
                    {"type": "Dense", "out_features": 5},
                ]
            },
            (20, 64),
            "out_features=5, but y has 2 classes",
        ),
        (
            {"layers": [{"type": "Flatten"}, {"type": "Dense"}, {"type": "ReLU"}]},
            (20, 64),
            "last layer must be a Dense",
        ),
        (
            {"layers": [{"type": "Conv2d", "out_channels": 4}, {"type": "Dense"}]},
            (20, 64),
            "did you mean 'Conv2D'",
        ),
        (
            {"early_stopping": True},
            (4, 64),
            "cannot hold out a stratified validation_fraction=0.1 of 4 samples",
        ),
    ],
)
def test_bad_settings_or_shapes_raise_clear_errors(params, X_shape, message):
    X = np.random.default_rng(0).random(X_shape)
    y = np.arange(len(X)) % 2
    with pytest.raises(ValueError, match=message):
        CNNClassifier(epochs=1, **params).fit(X, y)


def test_nan_single_class_and_wrong_feature_count_raise_clear_errors(fitted):
    X = np.random.default_rng(0).random((10, 64))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        CNNClassifier().fit(np.where(X > 0.9, np.nan, X), np.arange(10) % 2)
    with pytest.raises(ValueError, match="at least 2 classes .* got 1 class"):
        CNNClassifier().fit(X, np.zeros(10))
    with pytest.raises(ValueError, match="X has 63 features, but CNNClassifier is expecting 64"):
        fitted.predict(X[:, :63])
    with pytest.raises(ValueError, match=r"fitted on images of shape \(1, 8, 8\)"):
        fitted.predict(X.reshape(10, 1, 4, 16))


# --- partial_fit ----------------------------------------------------------------------------------------


def test_partial_fit_trains_one_epoch_per_call_and_needs_classes_first(digits_small):
    X, y = digits_small
    clf = CNNClassifier(layers=small_cnn(), learning_rate=3e-3, random_state=0)
    with pytest.raises(ValueError, match="pass classes="):
        clf.partial_fit(X, y)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.arange(10))
    assert [r["epoch"] for r in clf.history_] == [1, 2, 3]
    assert clf.score(X, y) > 0.7
    with pytest.raises(ValueError, match=r"labels \[11\] that are not in classes_"):
        clf.partial_fit(X[:2], np.array([1, 11]))


def test_partial_fit_after_fit_continues_from_the_fitted_weights(digits_small):
    X, y = digits_small
    clf = CNNClassifier(layers=small_cnn(), epochs=2, random_state=0).fit(X, y)
    before = clf.model_.layers[0].weight.data.copy()
    clf.partial_fit(X, y)
    assert len(clf.history_) == 3
    assert not np.array_equal(before, clf.model_.layers[0].weight.data)


def test_early_stopping_keeps_the_best_validation_epoch(digits_small):
    X, y = digits_small
    clf = CNNClassifier(layers=small_cnn(), epochs=6, early_stopping=True, patience=2, random_state=0).fit(
        X, y
    )
    val = [r["val_accuracy"] for r in clf.history_]
    assert None not in val
    assert clf.history_[clf.best_epoch_ - 1]["val_accuracy"] == max(val)


def test_verbose_shows_one_line_per_epoch(digits_small, capsys):
    X, y = digits_small
    CNNClassifier(layers=small_cnn(), epochs=2, verbose=True, random_state=0).fit(X[:100], y[:100])
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out


# --- scikit-learn's tools -------------------------------------------------------------------------------


def test_works_in_a_pipeline_with_standard_scaler(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = make_pipeline(
        StandardScaler(),
        CNNClassifier(layers=small_cnn(), epochs=4, learning_rate=3e-3, standardize=False, random_state=0),
    )
    assert pipe.fit(X_train, y_train).score(X_test, y_test) > 0.9


def test_cross_val_score(digits_small):
    X, y = digits_small
    scores = cross_val_score(
        CNNClassifier(layers=small_cnn(), epochs=8, learning_rate=1e-2, random_state=0), X, y, cv=3
    )
    assert scores.shape == (3,) and scores.min() > 0.85


def test_grid_search_over_learning_rate_and_channels_in_two_processes(digits_small):
    X, y = digits_small
    grid = GridSearchCV(
        CNNClassifier(epochs=2, random_state=0),
        {"learning_rate": [1e-3, 3e-3], "layers": [small_cnn(4, 8), small_cnn(8, 16)]},
        cv=2,
        n_jobs=2,
    )
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert (
        grid.best_estimator_.model_.layers[0].weight.data.shape[0]
        == grid.best_params_["layers"][0]["out_channels"]
    )
    # the processes train exactly what one process trains
    serial = GridSearchCV(CNNClassifier(epochs=2, random_state=0), grid.param_grid, cv=2, n_jobs=1).fit(X, y)
    assert np.array_equal(grid.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])


# --- the same loop as train.py ---------------------------------------------------------------------------


def test_trains_the_same_weights_as_the_config_training_loop():
    """A config trained by minicnn.train (as train.py trains it) and CNNClassifier.from_config(config)
    fitted on the training part of the same digits split end with bit-identical weights; the training
    seed differs from the split seed, which the estimator takes as validation_split_state."""
    layers = small_cnn()[:-1] + [{"type": "Dense", "out_features": 10}]
    cfg = Config(
        seed=3,
        model=ModelConfig(layers=layers),
        data=DataConfig(source="digits", val_fraction=0.1, split_seed=0, augment=AugmentConfig(shift=1)),
        train=TrainConfig(epochs=3, batch_size=64, lr=0.01, label_smoothing=0.05, patience=0),
    )
    dataset, model, trainer = prepare(cfg)
    trainer.fit(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, progress=False)

    X, y = load_digits(return_X_y=True)
    X_rest, X_test, y_rest, y_test = train_test_split(
        (X / 16).astype(np.float32), y, test_size=0.2, stratify=y, random_state=0
    )
    clf = CNNClassifier.from_config(cfg)
    params = clf.get_params()
    assert (
        params["random_state"] == 3
        and params["validation_split_state"] == 0
        and params["early_stopping"]
        and params["patience"] == 0
    )
    assert params["train_options"] == {"label_smoothing": 0.05} and params["augment"] == {"shift": 1}
    clf.fit(X_rest, y_rest)
    for name, value in model.state_dict().items():
        assert np.array_equal(clf.model_.state_dict()[name], value), name
    assert clf.score(X_test, y_test) == trainer.evaluate(dataset.X_test, dataset.y_test)[1]


def test_default_estimator_reaches_97_percent_on_the_digits_split(digits):
    X_train, X_test, y_train, y_test = digits
    assert CNNClassifier(random_state=0).fit(X_train, y_train).score(X_test, y_test) >= 0.97
