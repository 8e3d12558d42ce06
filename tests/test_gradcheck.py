"""The gradient checker: its documented import path works and its report gives a verdict."""

import re

import numpy as np

from minicnn.nn import gradcheck
from minicnn.nn.gradcheck import TOLERANCE, GradCheckReport, check_layer
from minicnn.nn.layers import Dense


def test_docstring_example_imports_from_a_module_that_exists():
    imports = re.findall(r"from (minicnn[\w.]*) import (\w+)", gradcheck.__doc__)
    assert imports, "the module docstring should show how to import check_layer"
    for module, name in imports:
        namespace: dict = {}
        exec(f"from {module} import {name}", namespace)
        assert callable(namespace[name])


def test_report_is_ok_for_a_correct_backward_pass():
    layer = Dense(4, 3, dtype=np.float64, rng=0)
    report = check_layer(layer, np.random.default_rng(0).standard_normal((2, 4)))
    assert report.ok, report
    assert report.tolerance == TOLERANCE
    assert str(report).startswith("GradCheckReport(ok:")


def test_report_fails_a_wrong_backward_pass_and_says_so():
    class Wrong(Dense):
        def backward(self, grad_out):
            return super().backward(grad_out) * 1.5

    report = check_layer(
        Wrong(4, 3, dtype=np.float64, rng=0), np.random.default_rng(0).standard_normal((2, 4))
    )
    assert not report.ok
    assert "FAILED" in str(report)


def test_verdict_compares_the_worst_error_with_the_tolerance():
    assert GradCheckReport({"input": 1e-7, "weight": 2e-6}, tolerance=1e-6).ok is False
    assert GradCheckReport({"input": 1e-7, "weight": 2e-6}, tolerance=1e-5).ok is True
    assert GradCheckReport({"input": float("nan")}).ok is False
