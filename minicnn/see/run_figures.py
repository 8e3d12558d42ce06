"""All the figures ``python train.py`` draws into a finished run's directory, as named steps.

:func:`figure_steps` lists them (:func:`minicnn.see.plots.run_figure_steps`, the kernels' figures of
:mod:`minicnn.see.kernels` and the saliency figures of :mod:`minicnn.see.saliency`); the command draws
them in turn, and ``benchmarks/bench_figures.py`` times each one.
"""

from __future__ import annotations

import numpy as np

from .kernels import kernel_figure_steps
from .plots import FigureStep, run_figure_steps, run_steps
from .saliency import saliency_figure_steps


def figure_steps(
    run_dir, model, init_model, history, X_test, y_test, X_train, label_smoothing: float = 0.0, kernels=None
) -> list[FigureStep]:
    """Every figure of a run, not yet drawn: ``(name, draw)`` pairs, ``draw()`` returning the paths.

    X_test, X_train : float images (N, C, H, W); y_test : (N,) labels; kernels : the per-epoch
    snapshots (:func:`minicnn.see.change.load_kernel_history`), or None.
    """
    # blank for occlusion: an empty pixel as the model sees it (the darkest value of each channel)
    blank = np.asarray(X_train).min(axis=(0, 2, 3))
    return (
        run_figure_steps(run_dir, model, init_model, history, X_test, y_test, label_smoothing)
        + kernel_figure_steps(run_dir, model, kernels, X_train)
        + saliency_figure_steps(run_dir, model, X_test, y_test, blank)
    )


def write_figures(*args, **kwargs) -> list[str]:
    """Draw every figure of :func:`figure_steps` (same arguments); the paths written."""
    return run_steps(figure_steps(*args, **kwargs))


__all__ = ["figure_steps", "write_figures"]
