"""All the figures ``python train.py`` draws into a finished run's directory, as named steps.

:func:`figure_steps` lists them (:func:`run_figure_steps`: the filters, history, feature maps,
confusion and mistakes; the kernels' figures of
:mod:`minicnn.see.kernels` and the saliency figures of :mod:`minicnn.see.saliency`); the command draws
them in turn, and ``benchmarks/bench_figures.py`` times each one.
"""

from __future__ import annotations

import os

import numpy as np

from .kernels import kernel_figure_steps, plot_filters_change
from .plots import (
    FigureStep,
    first_conv,
    kernel_array,
    plot_confusion_matrix,
    plot_feature_maps,
    plot_filters,
    plot_history,
    plot_mistakes,
    run_steps,
    symmetric_limit,
)
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


def write_run_figures(
    run_dir,
    model,
    init_model=None,
    history=None,
    X_test=None,
    y_test=None,
    figures: bool = True,
    label_smoothing: float = 0.0,
) -> list[str]:
    """Write a training run's figures into ``run_dir`` and return their paths.

    ``filters_init.png`` (the first Conv2D's kernels at initialization) and ``filters_learned.png``
    (initial, learned and their difference, with each kernel's angle from initialization:
    :func:`minicnn.see.kernels.plot_filters_change`), ``feature_maps.png`` (the first
    test image), ``history.png``, ``confusion.png`` and ``mistakes.png`` (on the test set).

    Parameters
    ----------
    run_dir : str or PathLike
    model : Sequential, trained
    init_model : Sequential or ndarray of the first Conv2D's initial weights (out, in, kh, kw), optional
        Without it, filters_init.png is not written.
    history : list of per-epoch dicts (see :func:`plot_history`), optional
    X_test : ndarray of shape (N, C, H, W); y_test : (N,) int labels; optional
        Without them, the feature-map, confusion and mistakes figures are not written.
    figures : bool
        False writes nothing (the training config's switch) and returns [].
    label_smoothing : float
        The run's label smoothing, for the loss floor drawn in history.png.
    """
    if not figures:
        return []
    os.makedirs(run_dir, exist_ok=True)
    return run_steps(run_figure_steps(run_dir, model, init_model, history, X_test, y_test, label_smoothing))


def run_figure_steps(
    run_dir, model, init_model=None, history=None, X_test=None, y_test=None, label_smoothing: float = 0.0
) -> list[FigureStep]:
    """:func:`write_run_figures`'s figures as named steps, not yet drawn (arguments as there); the test
    set's class probabilities are computed once, for the confusion matrix and the mistakes."""

    def target(name):
        return os.path.join(run_dir, name)

    initial = None
    if init_model is not None:
        initial = (
            first_conv(init_model).weight.data if hasattr(init_model, "layers") else kernel_array(init_model)
        )
    steps = _filter_steps(first_conv(model).weight.data, initial, target)
    if history is not None:
        n_classes = int(np.shape(model.predict_logits(X_test[:1]))[1]) if X_test is not None else 10

        def draw_history():
            plot_history(history, label_smoothing, n_classes, path=target("history.png"))
            return [target("history.png")]

        steps.append(("history.png", draw_history))
    if X_test is None or y_test is None or not len(X_test):
        return steps

    def draw_feature_maps():
        title = f"test image 0 (label {y_test[0]})"
        plot_feature_maps(model, X_test[0], title=title, path=target("feature_maps.png"))
        return [target("feature_maps.png")]

    def draw_results():
        probabilities = model.predict_proba(X_test)
        y_pred = probabilities.argmax(axis=1)
        plot_confusion_matrix(y_test, y_pred, path=target("confusion.png"))
        plot_mistakes(X_test, y_test, y_pred, probabilities=probabilities, path=target("mistakes.png"))
        return [target("confusion.png"), target("mistakes.png")]

    return steps + [("feature_maps.png", draw_feature_maps), ("confusion.png, mistakes.png", draw_results)]


def _filter_steps(learned: np.ndarray, initial: np.ndarray | None, target) -> list[FigureStep]:
    """``filters_init.png`` (when ``initial`` is given) and ``filters_learned.png``: the first Conv2D's
    kernels (out, in, kh, kw) at initialization, and initial, learned and their difference with each
    kernel's angle from initialization; ``target(name)`` gives each file's path."""
    vmax = symmetric_limit(learned, *([] if initial is None else [initial]))
    in_channel = None if learned.shape[1] in (1, 3) else 0  # grey kernels, or colour patches for RGB input

    def draw_init():
        title = "First-layer kernels at initialization"
        plot_filters(initial, in_channel=in_channel, vmax=vmax, title=title, path=target("filters_init.png"))
        return [target("filters_init.png")]

    def draw_learned():
        if initial is not None:
            plot_filters_change(initial, learned, in_channel=in_channel, path=target("filters_learned.png"))
        else:
            title = "First-layer kernels after training"
            plot_filters(
                learned, in_channel=in_channel, vmax=vmax, title=title, path=target("filters_learned.png")
            )
        return [target("filters_learned.png")]

    init_step: list[FigureStep] = [] if initial is None else [("filters_init.png", draw_init)]
    return init_step + [("filters_learned.png", draw_learned)]


def write_figures(*args, **kwargs) -> list[str]:
    """Draw every figure of :func:`figure_steps` (same arguments); the paths written."""
    return run_steps(figure_steps(*args, **kwargs))


__all__ = ["figure_steps", "run_figure_steps", "write_figures", "write_run_figures"]
