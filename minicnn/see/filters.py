"""Classic hand-made kernels, named as photo editors name them, and the tools to compare with them.

Every photo editor's "Blur", "Sharpen" or "Find edges" is a convolution with a small kernel that a
person chose by hand. A CNN layer computes exactly the same operation; the difference is only that
it *learns* its kernels. This module holds the hand-made ones so that a learned kernel can be put
beside them (:func:`most_similar`) and so that the project's own :class:`~minicnn.nn.layers.Conv2D`
can be seen applying them (:func:`conv_from_kernel`, ``python -m minicnn.gallery``).

The kernels are written as the layer uses them: as **cross-correlation** weights (no flip; see
:mod:`minicnn.nn.functional`). So ``Sobel x`` here responds positively where the image gets brighter
from left to right. (A textbook that writes the Sobel kernel for true convolution shows it
mirrored; the result is the same filter.)

Two per-pixel effects are convolutions too, with 1x1 kernels: ``invert`` (weight -1, bias 1) and
``sepia`` (a 1x1 convolution that mixes the R, G and B channels).
"""

from __future__ import annotations

import numpy as np

from ..nn.layers import Conv2D

#: The 3x3 spatial kernels, as cross-correlation weights, by the name a photo editor gives them.
KERNELS: dict[str, np.ndarray] = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float64),
    "box blur": np.full((3, 3), 1 / 9),
    "gaussian blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16,
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
    # the 8-neighbour Laplacian; the sign makes a thin bright stroke come out bright
    "edge detect": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float64),
    "laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64),
    "sobel x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
    "sobel y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
    "prewitt x": np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], dtype=np.float64),
    "prewitt y": np.array([[-1, -1, -1], [0, 0, 0], [1, 1, 1]], dtype=np.float64),
    "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64),
    # Pillow's ImageFilter.EDGE_ENHANCE: the identity plus half an 8-neighbour Laplacian
    "edge enhance": np.array([[-1, -1, -1], [-1, 10, -1], [-1, -1, -1]], dtype=np.float64) / 2,
}

#: Sepia tone as a 1x1 convolution: row o holds the weights of output channel o on inputs (R, G, B).
SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def kernel(name: str) -> np.ndarray:
    """A copy of the named 3x3 kernel, (3, 3) float64. Names ignore case, ``_`` and ``-``
    (``"Sobel x"``, ``"sobel_x"``)."""
    key = _key(name)
    if key not in KERNELS:
        raise KeyError(f"no classic kernel named {name!r}; known: {sorted(KERNELS)}")
    return KERNELS[key].copy()


def conv_from_kernel(weights, channels: int = 1, bias=0.0, dtype=np.float64) -> Conv2D:
    """A :class:`~minicnn.nn.layers.Conv2D` whose weights are set by hand.

    Parameters
    ----------
    weights : str, ndarray of shape (kh, kw), or ndarray of shape (out, in, kh, kw)
        A kernel's name or its values. A 2-D kernel is applied to every channel on its own,
        as a photo editor applies a filter to R, G and B: the layer maps ``channels`` to
        ``channels``, with the kernel on the diagonal of the weight tensor (and zeros across
        channels). A 4-D array is used as the weight tensor itself.
    channels : int
        Number of channels a 2-D kernel is applied to.
    bias : float or ndarray of shape (out,)
    dtype : float64 (default) or float32

    Returns
    -------
    Conv2D with odd kernels padded "same" (the output keeps the input's size), stride 1.
    """
    values = kernel(weights) if isinstance(weights, str) else np.asarray(weights, dtype=np.float64)
    if values.ndim == 2:
        weight = np.zeros((channels, channels) + values.shape)
        for c in range(channels):
            weight[c, c] = values
    elif values.ndim == 4:
        weight = values
    else:
        raise ValueError(
            f"conv_from_kernel: expected a kernel (kh, kw) or weights (out, in, kh, kw), "
            f"got shape {values.shape}"
        )
    out_channels, in_channels, kh, kw = weight.shape
    padding = "same" if kh % 2 and kw % 2 else 0
    layer = Conv2D(in_channels, out_channels, (kh, kw), padding=padding, bias=True, dtype=dtype, rng=0)
    layer.weight.data[...] = weight
    assert layer.bias is not None  # built with bias=True
    layer.bias.data[...] = bias
    return layer


def invert_conv(channels: int = 1, dtype=np.float64) -> Conv2D:
    """Photo negative ``1 - x`` for images in [0, 1], as a 1x1 convolution: weight -1, bias 1."""
    return conv_from_kernel(-np.ones((1, 1)), channels=channels, bias=1.0, dtype=dtype)


def sepia_conv(dtype=np.float64) -> Conv2D:
    """Sepia tone as a 1x1 convolution from 3 channels (R, G, B) to 3: :data:`SEPIA` mixes them.

    The result can exceed 1; clip it for display.
    """
    return conv_from_kernel(SEPIA[:, :, None, None], dtype=dtype)


def filter_bank(names=None, dtype=np.float64) -> Conv2D:
    """One Conv2D from 1 channel to ``len(names)``: output channel k applies kernel ``names[k]``.

    This is what a CNN's first layer looks like, with hand-made kernels instead of learned ones.
    ``names`` defaults to every kernel in :data:`KERNELS`.
    """
    names = list(KERNELS) if names is None else list(names)
    weight = np.stack([kernel(name) for name in names])[:, None]
    return conv_from_kernel(weight, dtype=dtype)


def apply(weights, image: np.ndarray, bias=0.0) -> np.ndarray:
    """Apply a kernel (name or values, as for :func:`conv_from_kernel`) to one image with Conv2D.

    image : ndarray of shape (H, W) (gray) or (H, W, C) (colour, channels last as images are stored)
    Returns an array of the same layout; a 4-D weight tensor may change the number of channels.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        x = image[None, None]
    elif image.ndim == 3:
        x = image.transpose(2, 0, 1)[None]
    else:
        raise ValueError(f"apply: expected an image (H, W) or (H, W, C), got shape {image.shape}")
    values = kernel(weights) if isinstance(weights, str) else np.asarray(weights, dtype=np.float64)
    layer = conv_from_kernel(values, channels=x.shape[1], bias=bias)
    out = layer.forward(x)[0]
    return out[0] if image.ndim == 2 else out.transpose(1, 2, 0)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """``<a, b> / (|a| |b|)`` of the flattened arrays; nan if either is all zeros."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cosine_similarity: shapes differ, {a.shape} vs {b.shape}")
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norms) if norms > 0 else float("nan")


def _centered(values: np.ndarray, shape) -> np.ndarray | None:
    """``values`` placed at the centre of a zero array of ``shape`` (None if it does not fit evenly)."""
    (kh, kw), (h, w) = values.shape, shape
    if kh > h or kw > w or (h - kh) % 2 or (w - kw) % 2:
        return None
    out = np.zeros(shape)
    top, left = (h - kh) // 2, (w - kw) // 2
    out[top : top + kh, left : left + kw] = values
    return out


def most_similar(weights, candidates=None, signed: bool = True) -> tuple[str | None, float]:
    """The classic kernel most similar in direction to ``weights``, and their cosine similarity.

    Parameters
    ----------
    weights : ndarray of shape (kh, kw)
        One kernel (one output channel, one input channel). Larger odd kernels are compared
        with the 3x3 classics placed at their centre.
    candidates : list of str, optional
        Names to compare with; default every kernel in :data:`KERNELS`.
    signed : bool
        Also compare with each classic kernel's negative, reported as ``"-sobel x"``: a filter
        that fires on dark-to-bright edges and one that fires on bright-to-dark are different
        detectors once a ReLU follows, but the same kernel up to sign.

    Returns
    -------
    (name, cosine) : the best match, or (None, nan) for an all-zero kernel or no comparable kernel.
    Cosine similarity ignores scale: ``2 * sobel x`` matches ``sobel x`` with cosine 1.
    """
    values = np.asarray(weights, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"most_similar: expected one kernel (kh, kw), got shape {values.shape}")
    names = list(KERNELS) if candidates is None else [_key(n) for n in candidates]
    best_name, best = None, -np.inf
    for name in names:
        reference = _centered(kernel(name), values.shape)
        if reference is None:
            continue
        for sign, label in ((1.0, name), (-1.0, "-" + name)) if signed else ((1.0, name),):
            cos = cosine_similarity(values, sign * reference)
            if cos > best:  # nan never wins
                best_name, best = label, cos
    return (best_name, best) if best_name is not None else (None, float("nan"))


#: How many random kernels :func:`chance_cosines` draws per shape, and the seed of their Generator.
N_RANDOM_KERNELS, RANDOM_KERNEL_SEED = 10_000, 0
#: Below this percentile among random kernels a best match means nothing: "no classic match".
MATCH_PERCENTILE = 95.0
_CHANCE_CACHE: dict[tuple[int, int], np.ndarray] = {}


def chance_cosines(shape) -> np.ndarray:
    """Sorted best-match cosines of random kernels of ``shape`` against the classic bank (signed).

    :data:`N_RANDOM_KERNELS` Gaussian kernels from ``numpy.random.default_rng(RANDOM_KERNEL_SEED)``,
    each scored as :func:`most_similar` scores a learned kernel. The null distribution a match is
    judged against: even random 3x3 kernels match some classic with cosine about 0.54 on average,
    because the bank holds 24 directions in a 9-dimensional space. Cached per shape.

    shape : (kh, kw) of the kernels; returns ndarray of shape (N_RANDOM_KERNELS,), ascending.
    """
    shape = tuple(int(v) for v in shape)
    if shape not in _CHANCE_CACHE:
        references = [_centered(kernel(name), shape) for name in KERNELS]
        bank = np.array([r.ravel() / np.linalg.norm(r) for r in references if r is not None])
        if not len(bank):
            _CHANCE_CACHE[shape] = np.full(1, np.nan)
        else:
            rng = np.random.default_rng(RANDOM_KERNEL_SEED)
            random = rng.standard_normal((N_RANDOM_KERNELS, shape[0] * shape[1]))
            random /= np.linalg.norm(random, axis=1, keepdims=True)
            _CHANCE_CACHE[shape] = np.sort(np.abs(random @ bank.T).max(axis=1))  # |cos|: both signs
    return _CHANCE_CACHE[shape]


def classic_match(weights) -> dict:
    """The nearest classic kernel of one kernel (kh, kw), and whether that match means anything.

    Returns ``{"name", "cosine", "percentile", "meaningful"}``: ``percentile`` is the share (0 to
    100) of random kernels of the same shape (:func:`chance_cosines`) whose best match is weaker;
    ``meaningful`` is ``percentile >= MATCH_PERCENTILE``.
    """
    name, cosine = most_similar(weights)
    chance = chance_cosines(np.shape(weights))
    if name is None or np.isnan(chance[0]):
        return {"name": None, "cosine": float("nan"), "percentile": float("nan"), "meaningful": False}
    percentile = 100.0 * np.searchsorted(chance, cosine, side="left") / len(chance)
    return {
        "name": name,
        "cosine": float(cosine),
        "percentile": float(percentile),
        "meaningful": bool(percentile >= MATCH_PERCENTILE),
    }


def match_label(match: dict) -> str:
    """``"like sobel x, cos 0.91, above 99% of random kernels"``, or ``"no classic match"`` with the
    best cosine and its percentile when the match is not above :data:`MATCH_PERCENTILE`."""
    if match["name"] is None:
        return "no classic match (nothing comparable)"
    if match["meaningful"]:
        share = "all" if match["percentile"] >= 100 else f"{np.floor(match['percentile']):.0f}% of"
        return f"like {match['name']}, cos {match['cosine']:.2f}, above {share} random kernels"
    return (
        f"no classic match (best {match['name']}, cos {match['cosine']:.2f}, "
        f"above only {np.floor(match['percentile']):.0f}% of random kernels)"
    )


__all__ = [
    "KERNELS",
    "MATCH_PERCENTILE",
    "SEPIA",
    "apply",
    "chance_cosines",
    "classic_match",
    "conv_from_kernel",
    "cosine_similarity",
    "filter_bank",
    "invert_conv",
    "kernel",
    "match_label",
    "most_similar",
    "sepia_conv",
]
