"""Optimizers against their textbook update rules; schedules; clipping; state round trips."""

import warnings

import numpy as np
import pytest

from minicnn.nn.optim import SGD, Adam, AdamW, CosineLR, StepLR, clip_grad_norm
from minicnn.nn.parameter import Parameter


def quadratic_param(seed=0):
    rng = np.random.default_rng(seed)
    return Parameter(rng.standard_normal(5)), rng.standard_normal((3, 5))


def run(opt_cls, steps=5, **kw):
    """Minimize sum((w - targets[t % 3])**2) for a few steps; return the trajectory."""
    p, targets = quadratic_param()
    opt = opt_cls([p], **kw)
    path = []
    for t in range(steps):
        opt.zero_grad()
        p.grad += 2 * (p.data - targets[t % 3])
        opt.step()
        path.append(p.data.copy())
    return np.array(path)


def reference(rule, steps=5):
    p, targets = quadratic_param()
    w, state, path = p.data.copy(), {}, []
    for t in range(steps):
        w = rule(w, 2 * (w - targets[t % 3]), state, t + 1)
        path.append(w.copy())
    return np.array(path)


def test_sgd_nesterov_momentum_weight_decay_matches_the_rule():
    lr, mu, wd = 0.1, 0.9, 0.01

    def rule(w, g, s, t):
        g = g + wd * w
        s["v"] = mu * s.get("v", 0) + g
        return w - lr * (g + mu * s["v"])

    np.testing.assert_allclose(run(SGD, lr=lr, momentum=mu, nesterov=True, weight_decay=wd), reference(rule))


def test_adam_matches_the_rule():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8

    def rule(w, g, s, t):
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        return w - lr * (s["m"] / (1 - b1**t)) / (np.sqrt(s["v"] / (1 - b2**t)) + eps)

    np.testing.assert_allclose(run(Adam, lr=lr), reference(rule), rtol=1e-12)


def test_adamw_decouples_weight_decay():
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8

    def rule(w, g, s, t):
        w = w * (1 - lr * wd)
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        return w - lr * (s["m"] / (1 - b1**t)) / (np.sqrt(s["v"] / (1 - b2**t)) + eps)

    np.testing.assert_allclose(run(AdamW, lr=lr, weight_decay=wd), reference(rule), rtol=1e-12)


@pytest.mark.parametrize(
    "opt_cls, kw", [(SGD, {"lr": 0.1, "momentum": 0.9}), (Adam, {"lr": 0.01}), (AdamW, {"lr": 0.01})]
)
def test_state_dict_resumes_bit_for_bit(opt_cls, kw):
    full = run(opt_cls, steps=6, **kw)
    p, targets = quadratic_param()
    opt = opt_cls([p], **kw)
    for t in range(3):
        opt.zero_grad()
        p.grad += 2 * (p.data - targets[t % 3])
        opt.step()
    state, weights = opt.state_dict(), p.data.copy()
    p2 = Parameter(weights)
    opt2 = opt_cls([p2], **kw)
    opt2.load_state_dict(state)
    for t in range(3, 6):
        opt2.zero_grad()
        p2.grad += 2 * (p2.data - targets[t % 3])
        opt2.step()
    assert np.array_equal(p2.data, full[-1])


def test_frozen_parameters_are_not_updated():
    p = Parameter(np.ones(3), requires_grad=False)
    p.grad[:] = 1
    SGD([p], lr=1.0).step()
    assert np.all(p.data == 1)


def test_schedules():
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    step = StepLR(opt, step_size=2, gamma=0.5)
    rates = []
    for _ in range(5):
        rates.append(opt.lr)
        step.step()
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    cos = CosineLR(opt, total=10, warmup=2)
    rates = []
    for _ in range(11):
        rates.append(opt.lr)
        cos.step()
    assert rates[0] == pytest.approx(1 / 3) and rates[1] == pytest.approx(2 / 3)
    assert rates[2] == pytest.approx(1.0) and rates[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))


def test_clip_grad_norm_scales_to_the_limit():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    a.grad[:] = [3.0, 0.0]
    b.grad[:] = [4.0]
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), [0.6, 0.0, 0.8], rtol=1e-9)
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(1.0)  # under the limit: unchanged


def test_bad_hyperparameters():
    p = [Parameter(np.zeros(1))]
    with pytest.raises(ValueError, match="lr must be > 0"):
        Adam(p, lr=0)
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        SGD(p, nesterov=True)
    with pytest.raises(TypeError, match="not a Parameter"):
        SGD([np.zeros(1)])


def test_a_warmup_at_least_as_long_as_the_run_warns_once():
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CosineLR(opt, total=2, warmup=2)
    assert len(caught) == 1
    assert "warm-up (2 epochs) is at least as long as the run (2 epochs)" in str(caught[0].message)
    assert "0.67 of the set 0.1" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CosineLR(SGD([Parameter(np.zeros(1))], lr=0.1), total=3, warmup=2)  # ends after it: no warning


def test_a_run_shorter_than_its_warmup_ends_during_the_warmup():
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    with pytest.warns(UserWarning, match="warm-up"):
        cos = CosineLR(opt, total=1, warmup=2)
    rates = []
    for _ in range(3):
        rates.append(opt.lr)
        cos.step()
    assert rates == pytest.approx([1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="warmup >= 0"):
        CosineLR(opt, total=3, warmup=-1)
