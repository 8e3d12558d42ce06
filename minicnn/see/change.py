"""How far kernels moved in training: the angle from initialization and the norm ratio, per kernel.

With a normalization after a convolution (BatchNorm, or a ReLU network judged by its argmax) only
a kernel's *direction* matters, so the honest measure of learning is the angle between the initial
and the final kernel, not the change of its entries. The norm ratio says what scaling happened on top.
Pure NumPy: training and the benchmarks use it without matplotlib.
"""

from __future__ import annotations

import os

import numpy as np


def _flat(weight, name: str) -> np.ndarray:
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim < 2:
        raise ValueError(f"{name}: expected kernels of shape (out, ...), got shape {weight.shape}")
    return weight.reshape(len(weight), -1)


def kernel_angles(initial, learned) -> np.ndarray:
    """Angle in degrees between each initial kernel and the same kernel after training.

    Parameters
    ----------
    initial, learned : ndarray of shape (out_channels, in_channels, kh, kw)
        (any shape ``(out, ...)``: each row ``[o]`` is one kernel, flattened).

    Returns
    -------
    ndarray of shape (out_channels,), in [0, 180]; nan where either kernel is all zeros.
    """
    a, b = _flat(initial, "initial"), _flat(learned, "learned")
    if a.shape != b.shape:
        raise ValueError(
            f"kernel_angles: initial kernels {np.shape(initial)} and learned kernels "
            f"{np.shape(learned)} differ in shape"
        )
    norm_a, norm_b = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        u, v = a / norm_a, b / norm_b
    # 2 atan2(|u - v|, |u + v|) rather than arccos(u . v): exact near 0 and 180 degrees too
    angles = 2 * np.arctan2(np.linalg.norm(u - v, axis=1), np.linalg.norm(u + v, axis=1))
    return np.where((norm_a[:, 0] > 0) & (norm_b[:, 0] > 0), np.degrees(angles), np.nan)


def norm_ratios(initial, learned) -> np.ndarray:
    """``|learned[o]| / |initial[o]|`` per kernel, shape (out_channels,); nan for an all-zero initial
    kernel."""
    a, b = _flat(initial, "initial"), _flat(learned, "learned")
    if a.shape != b.shape:
        raise ValueError(f"norm_ratios: shapes differ, {np.shape(initial)} vs {np.shape(learned)}")
    before = np.linalg.norm(a, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(before > 0, np.linalg.norm(b, axis=1) / before, np.nan)


def first_conv_name(model) -> str:
    """The name of the first convolution, depth first (``"0"``, or ``"1.body.0"`` inside a block): the
    layer whose kernels the run's figures plot."""
    found = model.convolutions()
    if not found:
        raise ValueError("the model has no convolution layer")
    return found[0][0]


def conv_weights(model, layer: int | str) -> np.ndarray:
    """The kernels of the layer ``layer`` (an index into ``model.layers`` or a dotted name), which must
    be a convolution: (out, in, kh, kw)."""
    try:
        conv = model.get_layer(layer)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None
    if not conv.is_convolution:
        raise ValueError(f"layer {layer} is a {type(conv).__name__}, not a convolution")
    return conv.weight.data


def run_kernel_change(run_dir) -> dict:
    """Angles and norm ratios of a run directory's plotted layer: ``init.npz`` against ``model.npz``.

    Returns ``{"layer": name, "angles": (out,), "norm_ratios": (out,)}``.
    """
    from ..nn.model import Sequential

    initial, learned = (Sequential.load(os.path.join(run_dir, name)) for name in ("init.npz", "model.npz"))
    layer = first_conv_name(learned)
    a, b = conv_weights(initial, layer), conv_weights(learned, layer)
    return {"layer": layer, "angles": kernel_angles(a, b), "norm_ratios": norm_ratios(a, b)}


#: The per-epoch snapshots of the plotted layer's kernels, in a run directory.
HISTORY_FILE = "kernels_history.npz"


class KernelHistory:
    """An ``on_epoch_end(trainer, record)`` hook that keeps the plotted layer's kernels after each epoch.

    It writes ``run_dir/kernels_history.npz`` atomically after every epoch: ``epochs`` (E + 1,) int
    (0 is the initialization, read from ``init.npz``), ``kernels`` (E + 1, out, in, kh, kw) float32 and
    ``layer`` (the name of the first convolution, :func:`first_conv_name`). Small: 4 kernels of 5x5
    over 20 epochs are 2,100 numbers.
    On a resumed run the snapshots up to the resumed epoch are kept. Pure NumPy: the training command
    passes it to :func:`minicnn.train.trainer.run`, which never imports plotting.
    """

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, HISTORY_FILE)
        self.run_dir = run_dir
        self._epochs, self._kernels = [], []

    def _start(self, model, epoch: int) -> None:
        from ..nn.model import Sequential

        layer = first_conv_name(model)
        saved = load_kernel_history(self.run_dir)
        if saved is not None:
            if saved["layer"] != layer or saved["kernels"].shape[1:] != conv_weights(model, layer).shape:
                raise ValueError(f"{self.path}: its kernels are not those of layer {layer} of this model")
            keep = saved["epochs"] < epoch
            self._epochs, self._kernels = list(saved["epochs"][keep]), list(saved["kernels"][keep])
        if not self._epochs:
            initial = Sequential.load(os.path.join(self.run_dir, "init.npz"))
            self._epochs, self._kernels = [0], [conv_weights(initial, layer).astype(np.float32)]
        self.layer = layer

    def __call__(self, trainer, record: dict) -> None:
        from ..io import save_npz_atomic
        from ..nn.devices import to_host  # a model trained on a GPU: its kernels, copied to the host

        if not self._epochs:
            self._start(trainer.model, int(record["epoch"]))
        self._epochs.append(int(record["epoch"]))
        self._kernels.append(to_host(trainer.model.get_layer(self.layer).weight.data).astype(np.float32))
        save_npz_atomic(
            self.path,
            {
                "epochs": np.asarray(self._epochs, dtype=np.int64),
                "kernels": np.stack(self._kernels),
                "layer": np.asarray(self.layer),
            },
        )


def load_kernel_history(run_dir) -> dict | None:
    """``run_dir/kernels_history.npz`` as ``{"epochs", "kernels", "layer"}``, or None if the run has none.

    Raises ValueError naming the file when it is malformed: a missing array, epochs that are not
    increasing integers, kernels that are not a finite float (epochs, out, in, kh, kw) array with one
    snapshot per epoch, a layer that is not one layer name.
    """
    from ..io import load_npz, show_path

    path = os.path.join(run_dir, HISTORY_FILE)
    if not os.path.lexists(path):
        return None
    saved, shown = load_npz(path), show_path(path)
    missing = sorted({"epochs", "kernels", "layer"} - set(saved))
    if missing:
        raise ValueError(f"{shown}: missing the array(s) {missing}; expected epochs, kernels and layer")
    kernels, epochs, layer = saved["kernels"], saved["epochs"], saved["layer"]
    if epochs.ndim != 1 or epochs.dtype.kind not in "iu" or np.any(np.diff(epochs) <= 0):
        raise ValueError(f"{shown}: epochs must be increasing integers, got {epochs.dtype} {epochs.shape}")
    if kernels.dtype.kind != "f" or kernels.ndim != 5 or len(kernels) != len(epochs):
        raise ValueError(
            f"{shown}: expected float kernels (epochs, out, in, kh, kw) with one epoch number each, "
            f"got {kernels.dtype} kernels {kernels.shape} and epochs {epochs.shape}"
        )
    if not np.all(np.isfinite(kernels)):
        raise ValueError(f"{shown}: the kernels hold NaN or infinite values")
    # the layer's name ("0", "1.body.0"); files written before layers had names hold its index
    if layer.shape != () or layer.dtype.kind not in "iuU" or (layer.dtype.kind != "U" and int(layer) < 0):
        raise ValueError(
            f"{shown}: layer must be one layer name (or a non-negative index), "
            f"got {layer.dtype} {layer.shape}"
        )
    return {"epochs": epochs, "kernels": kernels, "layer": str(layer)}


__all__ = [
    "HISTORY_FILE",
    "KernelHistory",
    "first_conv_name",
    "kernel_angles",
    "load_kernel_history",
    "norm_ratios",
    "run_kernel_change",
]
