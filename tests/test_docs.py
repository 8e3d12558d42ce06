"""docs/convolution.md's matrix-form snippet runs through the public functional API and equals Conv2D."""

import re
from pathlib import Path

import numpy as np

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "convolution.md"


def test_matrix_form_snippet_matches_the_layer_forward_and_backward():
    blocks = [b for b in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S) if "dx_layer" in b]
    assert len(blocks) == 1
    names = {"__name__": "docs"}
    exec(compile(blocks[0], "docs/convolution.md matrix form", "exec"), names)
    layer, x = names["layer"], names["x"]
    assert names["cols"].shape == (2, 27, 64)
    with layer.evaluating():
        np.testing.assert_allclose(names["Y"], layer.forward(x), atol=1e-12)
    np.testing.assert_allclose(names["dx"], names["dx_layer"], atol=1e-12)
    np.testing.assert_allclose(names["dW"], layer.weight.grad, atol=1e-12)
    assert np.abs(names["dx"]).max() > 0.1  # a real gradient, not zeros matched against zeros
