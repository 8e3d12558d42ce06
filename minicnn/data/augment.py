"""Batches and augmentation: random transforms of training images, grey or colour.

Every function takes images ``X`` of shape (N, C, H, W) (any number of channels: a colour image's
three planes move together) and an explicit ``numpy.random.Generator``, and returns a new array of
the same shape and dtype. Labels are unchanged.

- :func:`random_shift`, :func:`random_affine`: whole-pixel shifts; rotation and zoom (digits).
- :func:`random_flip`: mirror left-right with probability 1/2 (photos: a car facing left is a car).
- :func:`random_crop`: pad by ``p`` pixels on every side, then cut a random H x W window.
- :func:`cutout`: blank a random square per image (DeVries & Taylor, 2017).

Padding and cutout fill with 0, which is the training mean once images are standardized (the
pipeline augments standardized batches), so they add no new brightness.
"""

from __future__ import annotations

import numpy as np


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None = None):
    """Yield index arrays covering ``range(n)`` in batches of ``batch_size``, shuffled by ``rng``
    (in order when None). The last batch keeps the remainder, so every sample is seen each epoch."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def random_shift(X: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by a random whole number of pixels in [-max_shift, max_shift] on each axis.

    X : (N, C, H, W) -> a new array of the same shape. Uncovered pixels become the image's
    smallest value per channel (its background, also after standardization).
    """
    if max_shift <= 0:
        return X.copy()
    n, c, h, w = X.shape
    s = int(max_shift)
    background = X.min(axis=(2, 3), keepdims=True)
    padded = np.zeros((n, c, h + 2 * s, w + 2 * s), dtype=X.dtype)
    padded[:, :, s : s + h, s : s + w] = X - background
    dy, dx = rng.integers(-s, s + 1, size=(2, n))
    # output pixel (i, j) reads input pixel (i - dy, j - dx): the content moves by (dy, dx)
    return _windows(padded, s - dy, s - dx, h, w) + background


def _windows(padded: np.ndarray, top: np.ndarray, left: np.ndarray, h: int, w: int) -> np.ndarray:
    """``padded[k, :, top[k]:top[k] + h, left[k]:left[k] + w]`` for every image k, as one (N, C, h, w)."""
    n, c = padded.shape[:2]
    rows = top[:, None] + np.arange(h)
    cols = left[:, None] + np.arange(w)
    return padded[
        np.arange(n)[:, None, None, None],
        np.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_affine(X: np.ndarray, rotate: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate each image by a random angle in [-rotate, rotate] degrees and zoom it by a random
    factor in [1 - scale, 1 + scale], about its centre, with bilinear interpolation.

    X : (N, C, H, W) -> a new array of the same shape; uncovered pixels become the background
    (the image's smallest value per channel).
    """
    n, c, h, w = X.shape
    angle = np.deg2rad(rng.uniform(-rotate, rotate, size=n))
    zoom = rng.uniform(1.0 - scale, 1.0 + scale, size=n)
    background = X.min(axis=(2, 3), keepdims=True)
    # zero border of one pixel so out-of-range reads interpolate towards the background
    padded = np.zeros((n, c, h + 2, w + 2), dtype=X.dtype)
    padded[:, :, 1:-1, 1:-1] = X - background
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    i, j = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    cos, sin = (np.cos(angle) / zoom)[:, None, None], (np.sin(angle) / zoom)[:, None, None]
    # inverse map: where in the input each output pixel comes from
    src_i = np.clip(cos * i - sin * j + cy + 1, 0, h + 1)
    src_j = np.clip(sin * i + cos * j + cx + 1, 0, w + 1)
    i0 = np.minimum(np.floor(src_i).astype(np.intp), h)
    j0 = np.minimum(np.floor(src_j).astype(np.intp), w)
    fi, fj = (src_i - i0).astype(X.dtype)[:, None], (src_j - j0).astype(X.dtype)[:, None]
    b = np.arange(n)[:, None, None, None]
    ch = np.arange(c)[None, :, None, None]
    i0, j0 = i0[:, None], j0[:, None]
    top = padded[b, ch, i0, j0] * (1 - fj) + padded[b, ch, i0, j0 + 1] * fj
    bottom = padded[b, ch, i0 + 1, j0] * (1 - fj) + padded[b, ch, i0 + 1, j0 + 1] * fj
    return (top * (1 - fi) + bottom * fi + background).astype(X.dtype)


def random_flip(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image left-right with probability 1/2. X : (N, C, H, W) -> same shape."""
    flip = rng.random(len(X)) < 0.5
    out = X.copy()
    out[flip] = X[flip][..., ::-1]
    return out


def random_crop(X: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Pad every side with ``padding`` zeros, then cut an H x W window at a random offset per image.

    X : (N, C, H, W) -> same shape. The offset is uniform in [0, 2 * padding] on each axis, so an
    image moves by up to ``padding`` pixels and what moves in is 0 (the mean, once standardized).
    """
    if padding <= 0:
        return X.copy()
    n, c, h, w = X.shape
    padded = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=X.dtype)
    padded[:, :, padding : padding + h, padding : padding + w] = X
    top, left = rng.integers(0, 2 * padding + 1, size=(2, n))
    return _windows(padded, top, left, h, w)


def cutout(X: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Set a ``size`` x ``size`` square of every channel to 0, centred on a random pixel per image.

    X : (N, C, H, W) -> same shape. A square near the border is clipped, as in DeVries & Taylor
    (2017), so sometimes less than size x size is hidden.
    """
    if size <= 0:
        return X.copy()
    n, _, h, w = X.shape
    centres = rng.integers(0, (h, w), size=(n, 2))  # (N, 2): row, column of each square's centre
    top, left = centres[:, 0] - size // 2, centres[:, 1] - size // 2
    rows, cols = np.arange(h), np.arange(w)
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (N, H)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (N, W)
    hidden = inside_rows[:, :, None] & inside_cols[:, None, :]
    return np.where(hidden[:, None], np.zeros((), X.dtype), X)


def augment(X: np.ndarray, augment_cfg, rng: np.random.Generator) -> np.ndarray:
    """Apply what an :class:`~minicnn.train.config.AugmentConfig` switches on, in this order: rotation
    and zoom, whole-pixel shifts, horizontal flip, pad-and-crop, cutout. Returns ``X`` itself when
    everything is off."""
    if augment_cfg.rotate > 0 or augment_cfg.scale > 0:
        X = random_affine(X, augment_cfg.rotate, augment_cfg.scale, rng)
    if augment_cfg.shift > 0:
        X = random_shift(X, augment_cfg.shift, rng)
    if augment_cfg.horizontal_flip:
        X = random_flip(X, rng)
    if augment_cfg.pad_crop > 0:
        X = random_crop(X, augment_cfg.pad_crop, rng)
    if augment_cfg.cutout > 0:
        X = cutout(X, augment_cfg.cutout, rng)
    return X
