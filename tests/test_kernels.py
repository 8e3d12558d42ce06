"""Tests for minicnn.see.filters: the classic filters, their Conv2D, and the similarity search."""

import numpy as np
import pytest

from minicnn.nn.layers import Conv2D
from minicnn.see import filters as kernels


def reference_correlate(image, kernel):
    """Zero-padded 'same' cross-correlation of a 2-D image, by explicit loops (the oracle)."""
    kh, kw = kernel.shape
    padded = np.pad(image, ((kh // 2,) * 2, (kw // 2,) * 2))
    out = np.zeros_like(image, dtype=np.float64)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = np.sum(padded[i : i + kh, j : j + kw] * kernel)
    return out


def test_every_named_kernel_is_3x3_and_the_blurs_keep_brightness():
    assert set(kernels.KERNELS) >= {
        "identity",
        "box blur",
        "gaussian blur",
        "sharpen",
        "edge detect",
        "sobel x",
        "sobel y",
        "prewitt x",
        "prewitt y",
        "emboss",
        "edge enhance",
    }
    for name, values in kernels.KERNELS.items():
        assert values.shape == (3, 3), name
    for name in ("identity", "box blur", "gaussian blur", "sharpen", "emboss", "edge enhance"):
        assert kernels.kernel(name).sum() == pytest.approx(1.0), name
    for name in ("edge detect", "laplacian", "sobel x", "sobel y", "prewitt x", "prewitt y"):
        assert kernels.kernel(name).sum() == pytest.approx(0.0), name


def test_kernel_lookup_ignores_case_and_separators_and_returns_a_copy():
    k = kernels.kernel("Sobel_X")
    np.testing.assert_array_equal(k, kernels.KERNELS["sobel x"])
    k[0, 0] = 99
    assert kernels.KERNELS["sobel x"][0, 0] == -1
    with pytest.raises(KeyError, match="no classic kernel named 'blurry'"):
        kernels.kernel("blurry")


def test_sobel_x_responds_to_brightness_increasing_to_the_right():
    ramp = np.tile(np.arange(6.0), (6, 1))  # brighter to the right
    out = kernels.apply("sobel x", ramp)
    assert np.all(out[1:-1, 1:-1] == 8.0)  # (1 + 2 + 1) * a step of 2 columns
    assert np.allclose(kernels.apply("sobel y", ramp)[1:-1, 1:-1], 0.0)


@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_conv_from_kernel_matches_a_loop_oracle(name):
    rng = np.random.default_rng(0)
    image = rng.random((7, 9))
    layer = kernels.conv_from_kernel(name)
    assert isinstance(layer, Conv2D)
    out = layer.forward(image[None, None])[0, 0]
    np.testing.assert_allclose(out, reference_correlate(image, kernels.kernel(name)), atol=1e-12)


def test_a_2d_kernel_is_applied_to_each_colour_channel_on_its_own():
    rng = np.random.default_rng(1)
    photo = rng.random((6, 5, 3))
    out = kernels.apply("gaussian blur", photo)
    assert out.shape == photo.shape
    for c in range(3):
        np.testing.assert_allclose(
            out[:, :, c], reference_correlate(photo[:, :, c], kernels.kernel("gaussian blur"))
        )


def test_invert_is_a_1x1_convolution_with_weight_minus_one_and_bias_one():
    layer = kernels.invert_conv(channels=3)
    assert layer.kernel_size == (1, 1)
    x = np.random.default_rng(2).random((2, 3, 4, 4))
    np.testing.assert_allclose(layer.forward(x), 1.0 - x)


def test_sepia_mixes_the_rgb_channels_per_pixel():
    layer = kernels.sepia_conv()
    assert layer.weight.data.shape == (3, 3, 1, 1)
    pixel = np.array([0.2, 0.5, 0.7])
    out = layer.forward(pixel[None, :, None, None])[0, :, 0, 0]
    np.testing.assert_allclose(out, kernels.SEPIA @ pixel)


def test_filter_bank_puts_one_named_kernel_per_output_channel():
    bank = kernels.filter_bank(["sobel x", "sharpen"])
    assert bank.weight.data.shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(bank.weight.data[1, 0], kernels.kernel("sharpen"))


def test_most_similar_finds_each_classic_kernel_scaled_and_noisy():
    rng = np.random.default_rng(3)
    for name in ("sobel x", "sharpen", "emboss", "prewitt y"):
        noisy = 2.5 * kernels.kernel(name) + rng.normal(0, 0.05, (3, 3))
        match, cosine = kernels.most_similar(noisy)
        assert match == name and cosine > 0.99


def test_most_similar_reports_a_negated_match_with_a_minus_sign():
    match, cosine = kernels.most_similar(-kernels.kernel("sobel y"))
    assert match == "-sobel y" and cosine == pytest.approx(1.0)
    match, cosine = kernels.most_similar(-kernels.kernel("sobel y"), signed=False)
    assert match != "-sobel y" and cosine < 1.0


def test_most_similar_compares_a_5x5_kernel_with_the_classics_at_its_centre():
    big = np.zeros((5, 5))
    big[1:4, 1:4] = kernels.kernel("laplacian")
    assert kernels.most_similar(big) == ("laplacian", pytest.approx(1.0))


def test_most_similar_of_an_all_zero_kernel_is_none():
    name, cosine = kernels.most_similar(np.zeros((3, 3)))
    assert name is None and np.isnan(cosine)


def test_conv2d_with_the_flipped_kernel_is_true_convolution_as_scipy_computes_it():
    from scipy.signal import convolve2d

    rng = np.random.default_rng(4)
    image, kernel = rng.random((9, 7)), rng.normal(size=(3, 3))
    flipped = kernels.apply(kernel[::-1, ::-1], image)
    np.testing.assert_allclose(flipped, convolve2d(image, kernel, mode="same"), atol=1e-12)
    # and without the flip the layer computes something else (cross-correlation)
    assert np.abs(kernels.apply(kernel, image) - convolve2d(image, kernel, mode="same")).max() > 0.1
