"""Look inside a trained model: ``python -m minicnn.inspect RUN_DIR [--layer N] [--index I] [--out DIR]``
(and ``--in-channel C`` to draw one input channel's slice of a deeper layer's kernels).

Prints the model summary, then one line per kernel of a convolution layer: its norm, its mean, its
angle from initialization and norm ratio (from ``init.npz``), and the classic filter
(:mod:`minicnn.see.filters`) it points most nearly along, with the cosine similarity and its
percentile among random kernels of the same shape; below the 95th percentile it says "no classic
match". Redraws that layer's kernels and the feature maps of one test image into ``--out``
(default ``RUN_DIR/inspect``), and the figures of learning that ``train.py`` draws: the change from
initialization, the kernels over epochs (``kernels_history.npz``), top patches, saliency and
occlusion, and per-class mean feature maps.

RUN_DIR is a directory written by ``python train.py``: ``model.npz`` (read with
:meth:`Sequential.load`) and ``config.toml`` (from which :func:`minicnn.data.load_dataset` rebuilds the
same test split the run was scored on).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import cast

import numpy as np

from ..errors import one_line_errors
from ..io import show_path
from ..nn.layers import IMPORT_HELP, Conv2D, import_layer_modules
from ..nn.model import Sequential
from .change import conv_weights, kernel_angles, load_kernel_history, norm_ratios
from .filters import classic_match, match_label


def load_test_split(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """The run's test images (N, C, H, W) float32 and labels (N,), rebuilt from ``RUN_DIR/config.toml``.

    Without a config file, the default digits split: ``train_test_split(X, y, test_size=0.2,
    stratify=y, random_state=0)`` of scikit-learn's digits scaled to [0, 1] (not standardized).
    """
    config_path = os.path.join(run_dir, "config.toml")
    if os.path.lexists(config_path) and not os.path.isfile(config_path):
        raise ValueError(f"{show_path(config_path)} is not a file; the run's test split cannot be rebuilt")
    if os.path.isfile(config_path):
        dataset = _run_dataset(*_dataset_key(config_path))
        return np.asarray(dataset.X_test), dataset.y_test  # uint8-backed Images -> float32
    from ..data import load_digits_arrays, split_indices

    X, y = load_digits_arrays()
    test = split_indices(y, 0.2, 0.0, 0)["test"]
    return X[test], y[test]


def kernel_table(layer: Conv2D, initial=None) -> list[dict]:
    """One row per output filter: ``filter, norm, mean`` of the whole filter (in, kh, kw); with
    ``initial`` (the same layer's weights at initialization, (out, in, kh, kw)) also ``angle`` (degrees
    from initialization) and ``norm_ratio``; and the nearest classic kernel of its slice on
    ``in_channel``, the input channel where the filter is largest (the only one for a first layer):
    ``match``, ``cosine``, ``percentile`` among random kernels of that shape, ``meaningful`` and the
    ``label`` to print (:func:`minicnn.see.filters.classic_match`)."""
    weight = layer.weight.data.astype(np.float64)
    angles = kernel_angles(initial, weight) if initial is not None else np.full(len(weight), np.nan)
    ratios = norm_ratios(initial, weight) if initial is not None else np.full(len(weight), np.nan)
    rows = []
    for o, weights in enumerate(weight):
        channel = int(np.argmax(np.linalg.norm(weights.reshape(len(weights), -1), axis=1)))
        found = classic_match(weights[channel])
        rows.append(
            {
                "filter": o,
                "norm": float(np.linalg.norm(weights)),
                "mean": float(weights.mean()),
                "angle": float(angles[o]),
                "norm_ratio": float(ratios[o]),
                "in_channel": channel,
                "match": found["name"],
                "cosine": found["cosine"],
                "percentile": found["percentile"],
                "meaningful": found["meaningful"],
                "label": match_label(found),
            }
        )
    return rows


def format_table(rows: list[dict], in_channels: int) -> str:
    """The kernel table as text: angle and norm ratio from init (``-`` without init.npz), the match label."""
    header = f"{'filter':>6}  {'norm':>7}  {'mean':>8}  {'angle':>6}  {'norm x':>6}  "
    header += f"{'in':>3}  " if in_channels > 1 else ""
    header += "nearest classic filter (cosine, percentile among random kernels)"
    lines = [header, "-" * len(header)]
    for r in rows:
        moved = (
            f"{r['angle']:>5.1f}°  {r['norm_ratio']:>6.2f}  "
            if not np.isnan(r["angle"])
            else f"{'-':>6}  {'-':>6}  "
        )
        line = f"{r['filter']:>6}  {r['norm']:>7.3f}  {r['mean']:>8.4f}  {moved}"
        line += f"{r['in_channel']:>3}  " if in_channels > 1 else ""
        lines.append(line + r["label"])
    return "\n".join(lines)


#: Above this many kernels (out x in), the filter figure shows one input channel's slice.
MAX_GRID_KERNELS = 256


def inspect_run(
    run_dir,
    layer: int | str | None = None,
    index: int = 0,
    out=None,
    in_channel: int | None = None,
    stream=None,
) -> list[str]:
    """Print the summary and kernel table, and write the figures; returns the figure paths.

    layer : index into ``model.layers`` or dotted name (``"1.body.0"``) of a convolution (default: the
        first one, depth first)
    index : which test image to draw feature maps for
    out : folder for the figures (default ``RUN_DIR/inspect``)
    in_channel : draw only the kernels' slice on this input channel; by default every kernel is drawn
        (out x in grid) unless there are more than :data:`MAX_GRID_KERNELS`, then input channel 0
    """
    from . import plots as viz  # matplotlib only when figures are drawn

    stream = sys.stdout if stream is None else stream
    model, layer, X_test, y_test = _load_run(run_dir, layer, index, viz.conv_layers)
    load_kernel_history(run_dir)  # a malformed one is refused before anything is printed or drawn
    conv = cast(Conv2D, model.get_layer(layer))  # _load_run checked it is a convolution
    initial = _initial_weights(run_dir, layer)
    print(model.summary(X_test.shape[1:]), file=stream)
    print(f"\nLayer {layer}: {conv!r}, kernels {conv.weight.data.shape} (out, in, kh, kw)", file=stream)
    rows = kernel_table(conv, initial)
    print(format_table(rows, conv.in_channels), file=stream)
    if initial is not None:
        print(
            f"median angle from initialization (init.npz): {np.median([r['angle'] for r in rows]):.1f}°; "
            "a classic filter is named only above the 95th percentile of random kernels",
            file=stream,
        )
    prediction = int(model.predict(X_test[index : index + 1])[0])
    print(f"\nTest image {index}: label {int(y_test[index])}, predicted {prediction}", file=stream)

    out = os.path.join(run_dir, "inspect") if out is None else out
    paths = [
        os.path.join(out, f"filters_layer{layer}.png"),
        os.path.join(out, f"feature_maps_layer{layer}_image{index}.png"),
    ]
    if in_channel is None and conv.out_channels * conv.in_channels > MAX_GRID_KERNELS:
        in_channel = 0
        print(
            f"\n{conv.out_channels}x{conv.in_channels} kernels are too many for one figure; drawing input "
            "channel 0's slice (choose another with --in-channel)",
            file=stream,
        )
    if in_channel is not None and not 0 <= in_channel < conv.in_channels:
        raise ValueError(f"--in-channel {in_channel}: layer {layer} has {conv.in_channels} input channels")
    slice_note = "" if in_channel is None else f", input channel {in_channel}"
    viz.plot_filters(conv, in_channel=in_channel, title=f"Layer {layer}: {conv!r}{slice_note}", path=paths[0])
    viz.plot_feature_maps(model, X_test[index], layer=viz.default_stages(model, layer), path=paths[1])
    paths += _learning_figures(run_dir, model, layer, initial, out, X_test, y_test)
    for path in paths:
        print(f"wrote {path}", file=stream)
    return paths


def _load_run(
    run_dir, layer: int | str | None, index: int, conv_layers
) -> tuple[Sequential, str, np.ndarray, np.ndarray]:
    """The run's model, the name of the convolution to inspect (the first by default;
    ``conv_layers(model)`` lists them), and its test split (images (N, C, H, W), labels (N,));
    ValueError for a bad choice."""
    model_path = os.path.join(run_dir, "model.npz")
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{run_dir} has no model.npz; is it a run directory written by train.py?")
    model = Sequential.load(model_path)
    X_test, y_test = load_test_split(run_dir)
    convs = conv_layers(model)
    if not convs:
        raise ValueError(f"{model_path}: the model has no convolution layer to inspect")
    layer = convs[0] if layer is None else str(layer)
    if layer not in convs:
        raise ValueError(
            f"--layer {layer} is not a convolution; the convolutions of {show_path(model_path)} are "
            f"{', '.join(convs)} (names as in its summary)"
        )
    if not 0 <= index < len(X_test):
        raise ValueError(
            f"--index {index}: the test split has {len(X_test)} images, use 0 to {len(X_test) - 1}"
        )
    return model, layer, X_test, y_test


def _initial_weights(run_dir, layer: str) -> np.ndarray | None:
    """The layer ``layer``'s weights in ``RUN_DIR/init.npz``, or None for a run without one."""
    path = os.path.join(run_dir, "init.npz")
    return conv_weights(Sequential.load(path), layer) if os.path.isfile(path) else None


def _learning_figures(run_dir, model, layer: str, initial, out, X_test, y_test) -> list[str]:
    """The figures ``python train.py`` draws of whether and what the kernels learned, for any run:
    the change from init (this layer), and for the first Conv2D the evolution over epochs, top
    patches (training split), saliency and occlusion, and the per-class mean feature maps."""
    from .change import first_conv_name
    from .kernels import plot_filters_change, write_kernel_figures
    from .saliency import write_saliency_figures

    paths = []
    if initial is not None:
        paths.append(os.path.join(out, f"filters_learned_layer{layer}.png"))
        plot_filters_change(initial, conv_weights(model, layer), path=paths[-1])
    if layer != first_conv_name(model):
        return paths
    X_train = load_train_images(run_dir)
    history = load_kernel_history(run_dir)
    paths += write_kernel_figures(out, model, history, X_train)
    blank = np.asarray(X_test if X_train is None else X_train).min(axis=(0, 2, 3))  # Images -> floats
    return paths + write_saliency_figures(out, model, X_test, y_test, blank)


def load_train_images(run_dir) -> np.ndarray | None:
    """The run's training images (N, C, H, W) rebuilt from ``RUN_DIR/config.toml``; None without one."""
    config_path = os.path.join(run_dir, "config.toml")
    if not os.path.isfile(config_path):
        return None
    return _run_dataset(*_dataset_key(config_path)).X_train


def _file_key(path) -> tuple[str, int, int]:
    """``path`` with its modification time and size: a changed config is read again."""
    info = os.stat(path)
    return os.path.realpath(path), info.st_mtime_ns, info.st_size


def _dataset_key(config_path) -> tuple:
    """:func:`_run_dataset`'s key: the config's and, beside it, the run's ``split.npz``'s
    :func:`_file_key` (None without one)."""
    split_path = os.path.join(os.path.dirname(config_path), "split.npz")
    saved = os.path.isfile(split_path) and not os.path.islink(split_path)
    return _file_key(config_path), _file_key(split_path) if saved else None


@functools.lru_cache(maxsize=1)
def _run_dataset(config_key: tuple, split_key: tuple | None):
    """The data set a run's config describes, built once for the test split and the training images
    (inspect needs both: rebuilding it twice took a second on the MNIST-5k sample), with the split
    indices the run saved in ``split.npz`` when it has one (drawing them again imports scikit-learn:
    1 to 2 s)."""
    from ..data import DataError, load_dataset
    from ..io import load_npz
    from ..train.config import load_config

    data_cfg = load_config(config_key[0]).data
    if split_key is None:
        return load_dataset(data_cfg)
    try:
        return load_dataset(data_cfg, split=load_npz(split_key[0]))
    except DataError as exc:
        raise DataError(f"{show_path(split_key[0])}: {exc}") from None


@one_line_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minicnn.inspect",
        description="Print a trained model's kernels and redraw its filters and feature maps.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train.py")
    parser.add_argument("--import", dest="imports", action="append", metavar="MODULE", help=IMPORT_HELP)
    parser.add_argument(
        "--layer",
        default=None,
        help="the convolution to inspect, by its name in the summary (2, or 1.body.0 in a block); "
        "default the first",
    )
    parser.add_argument("--index", type=int, default=0, help="test image for the feature maps (default 0)")
    parser.add_argument("--out", default=None, help="folder for the figures (default RUN_DIR/inspect)")
    parser.add_argument(
        "--in-channel",
        type=int,
        default=None,
        help="draw only the kernels' slice on this input channel (deeper layers)",
    )
    args = parser.parse_args(argv)
    import_layer_modules(args.imports)
    inspect_run(args.run_dir, layer=args.layer, index=args.index, out=args.out, in_channel=args.in_channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
