"""Losses: values against direct formulas, numerical gradients, stability, bad input."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minicnn.nn.gradcheck import check_loss
from minicnn.nn.losses import Loss, MSELoss, SoftmaxCrossEntropy


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(2, 6), st.floats(0.0, 0.5), st.integers(0, 2**31))
@example(1, 2, 0.0, 3)  # a confident prediction: loss 1e-6, which log(1 + 1e-6) computed to 4 digits
def test_cross_entropy_value_and_gradient(n, k, smoothing, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    loss = SoftmaxCrossEntropy(label_smoothing=smoothing)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    target = np.full((n, k), smoothing / k)
    target[np.arange(n), labels] += 1 - smoothing
    assert loss.forward(logits, labels) == pytest.approx(-(target * np.log(probs)).sum() / n, rel=1e-10)
    report = check_loss(loss, logits, labels)
    assert report.worst < 1e-6, report


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(0, 2**31))
def test_mse_value_and_gradient(n, d, seed):
    rng = np.random.default_rng(seed)
    outputs, targets = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    loss = MSELoss()
    assert loss.forward(outputs, targets) == pytest.approx(np.mean((outputs - targets) ** 2), rel=1e-12)
    assert check_loss(loss, outputs, targets).worst < 1e-6


def test_cross_entropy_is_finite_for_huge_logits():
    loss = SoftmaxCrossEntropy()
    logits = np.array([[1e4, -1e4, 0.0], [-3e38, 3e38, 0.0]], dtype=np.float32)
    value = loss.forward(logits, np.array([1, 0]))
    grad = loss.backward()
    assert np.isfinite(value) and value > 1e3
    assert np.all(np.isfinite(grad))
    assert loss.forward(logits, np.array([0, 1])) == 0.0


def test_cross_entropy_returns_a_python_float():
    assert type(SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array([0, 2]))) is float


@pytest.mark.parametrize(
    "logits, labels, pattern",
    [
        (np.zeros((2, 3)), np.array([0, 3]), r"labels must be in \[0, 3\)"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), r"integer labels of shape \(2,\)"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), r"shape \(2,\).*shape \(3,\)"),
        (np.zeros((2, 3, 1)), np.array([0, 1]), r"expected logits \(N, K\)"),
        ([[0.0, 1.0]], np.array([0]), r"float ndarray"),
    ],
)
def test_cross_entropy_bad_input(logits, labels, pattern):
    with pytest.raises((ValueError, TypeError), match="SoftmaxCrossEntropy.*" + pattern):
        SoftmaxCrossEntropy().forward(logits, labels)


def test_mse_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match=r"MSELoss.*\(2, 3\).*\(3, 2\)"):
        MSELoss().forward(np.zeros((2, 3)), np.zeros((3, 2)))


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="before forward"):
        MSELoss().backward()


def test_loss_base_declares_forward_and_backward():
    with pytest.raises(NotImplementedError):
        Loss()(np.zeros((2, 3)), np.zeros(2, dtype=int))
    with pytest.raises(NotImplementedError):
        Loss().backward()
