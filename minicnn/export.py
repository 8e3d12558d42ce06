"""Export a model to ONNX, so other runtimes (onnxruntime, OpenCV's dnn, TensorRT...) can run it.

``to_onnx(model, path, input_shape)`` writes one ONNX graph (opset 17). Each layer writes its own
nodes (``Layer.to_onnx(graph, name)``, see :class:`OnnxGraph`); minicnn's layers write these:

=================  ================================================================================
minicnn            ONNX
=================  ================================================================================
Conv2D             Conv (strides, dilations, pads ``[top, left, bottom, right]``; "same" written out)
Dense              Gemm (``transB=1``: the weight stays (out_features, in_features))
ReLU, LeakyReLU    Relu, LeakyRelu (``alpha = negative_slope``)
Tanh, Sigmoid      Tanh, Sigmoid
MaxPool2D          MaxPool (padding ignored by the max, as minicnn pads with -inf)
AvgPool2D          AveragePool (``count_include_pad=1``: minicnn averages the padded zeros too)
GlobalAvgPool2D    GlobalAveragePool, then Flatten: minicnn's layer returns (N, C), not (N, C, 1, 1)
Flatten            Flatten (``axis=1``)
BatchNorm2D        BatchNormalization with the running statistics (eval mode)
Dropout            Identity (dropout is the identity at inference)
Residual           the body's nodes and the shortcut's, both from the block's input, then Add
Sequential         its layers' nodes in order
=================  ================================================================================

A layer of your own exports once it has a ``to_onnx`` method; without one, export stops with one
line that names the layer and the method to write.

Initializers carry the state dict's names (``"0.weight"``), so every weight in the file can be traced
to its layer. The graph's input ``input`` is (N, C, H, W) float32 with a dynamic batch dimension N;
its outputs are ``logits`` and ``probabilities`` (the softmax, equal to ``Sequential.predict_proba``).
The ``onnx`` package (``pip install "minicnn[onnx]"``) is imported only when exporting.

Command: ``python -m minicnn.export RUN_DIR --onnx FILE`` (or ``minicnn-export``) exports a run's
``model.npz``; the run's standardization (``split.npz``) goes in front of the network, so the file
takes the images as minicnn's data loaders give them (pixels scaled to [0, 1]).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .errors import one_line_errors
from .io import show_path
from .nn.layers import IMPORT_HELP, import_layer_modules
from .nn.model import Sequential

#: The ONNX operator set the graph is written for (each operator used has its present definition by then).
OPSET = 17
_MISSING = 'minicnn.export needs the onnx package: pip install "minicnn[onnx]"'


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(_MISSING) from None
    return onnx


class OnnxGraph:
    """The nodes and initializers being collected, and the name of the tensor the next node reads.

    What a layer's ``to_onnx(graph, name)`` uses: ``graph.tensor`` (the name of its input),
    ``graph.constant(name, array)`` (an initializer, float32; returns its name) and
    ``graph.add(op, name, extra_inputs=(), **attributes)`` (a node reading ``graph.tensor`` and the
    extra inputs; its output becomes ``graph.tensor``). Example, a layer computing ``x * scale``::

        def to_onnx(self, graph, name):
            graph.add("Mul", name, [graph.constant(f"{name}.scale", self.scale.data)])
    """

    def __init__(self, onnx, tensor: str):
        self.onnx, self.tensor = onnx, tensor
        self.nodes: list = []  # onnx NodeProto
        self.initializers: list = []  # onnx TensorProto

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def add(self, op: str, name: str, extra_inputs=(), **attributes) -> None:
        """Append ``op`` reading the current tensor (plus ``extra_inputs``); its output becomes current."""
        out = f"{name}.out" if name else f"{op}.out"
        inputs = [self.tensor, *[i for i in extra_inputs if i is not None]]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=name or op, **attributes))
        self.tensor = out


def _check_input_shape(model: Sequential, input_shape) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) from ``input_shape`` (C, H, W) or (N, C, H, W), which the model must accept, and the
    number of classes the model outputs for it."""
    shape = tuple(input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
        raise ValueError(
            f"to_onnx: input_shape must be (C, H, W) of positive ints, got {tuple(input_shape)!r}"
        )
    try:
        probabilities = model.predict_proba(np.zeros((1,) + shape, np.float32))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"to_onnx: the model does not accept inputs of shape (N, *{shape}): {exc}") from None
    if probabilities.ndim != 2:
        raise ValueError(
            f"to_onnx: the model's output must be (N, classes), got {probabilities.shape[1:]} per image"
        )
    channels, height, width = (int(s) for s in shape)
    return (channels, height, width), int(probabilities.shape[1])


def build_onnx(model: Sequential, input_shape, mean=None, std=None):
    """The ONNX ``ModelProto`` for ``model`` (see :func:`to_onnx`); checked with ``onnx.checker``."""
    onnx = _import_onnx()
    from onnx import TensorProto, helper

    if not isinstance(model, Sequential):
        raise TypeError(f"to_onnx: expected a minicnn Sequential, got {type(model).__name__}")
    (channels, height, width), classes = _check_input_shape(model, input_shape)
    graph = OnnxGraph(onnx, "input")
    if mean is not None or std is not None:
        shift, scale = (
            np.broadcast_to(np.asarray(default if v is None else v, np.float32), (channels,))
            for v, default in ((mean, 0.0), (std, 1.0))
        )
        graph.add("Sub", "standardize.sub", [graph.constant("standardize.mean", shift.reshape(1, -1, 1, 1))])
        graph.add("Div", "standardize.div", [graph.constant("standardize.std", scale.reshape(1, -1, 1, 1))])
    try:
        model.to_onnx(graph, "")
    except NotImplementedError as exc:
        raise ValueError(f"to_onnx: {exc}") from None
    graph.nodes.append(helper.make_node("Identity", [graph.tensor], ["logits"], name="logits"))
    graph.nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1))
    outputs = [
        helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", classes])
        for out in ("logits", "probabilities")
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, height, width])]
    proto = helper.make_model(
        helper.make_graph(graph.nodes, "minicnn", inputs, outputs, graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="minicnn",
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def to_onnx(model: Sequential, path, input_shape, mean=None, std=None) -> None:
    """Write ``model`` as an ONNX file (opset :data:`OPSET`) computing what ``model`` computes in eval mode.

    Parameters
    ----------
    model : Sequential
        Every layer must have a ``to_onnx`` method (minicnn's own do); weights are written as float32.
    path : str or path-like
        The ``.onnx`` file, written atomically (a temporary file, then a rename).
    input_shape : (C, H, W) or (N, C, H, W)
        One image's shape; the batch dimension of the graph is dynamic whatever N says.
    mean, std : array-like of shape (C,), optional
        When given, the graph first computes ``(input - mean) / std`` per channel (a run's standardization).

    Notes
    -----
    Raises ImportError (one line) without the ``onnx`` package, ValueError for a layer ONNX cannot express
    or an input shape the model does not accept.
    """
    from .io import write_bytes_atomic

    proto = build_onnx(model, input_shape, mean, std)
    write_bytes_atomic(path, proto.SerializeToString(), suffix=".onnx")


# --- command ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minicnn.export",
        description="Export a run's model (RUN_DIR/model.npz) to another format.",
        epilog="example: python -m minicnn.export runs/digits-20260101-120000 --onnx digits.onnx",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train.py")
    parser.add_argument("--import", dest="imports", action="append", metavar="MODULE", help=IMPORT_HELP)
    parser.add_argument("--onnx", metavar="FILE", required=True, help="write an ONNX model (opset 17) here")
    parser.add_argument(
        "--input-shape",
        metavar=("C", "H", "W"),
        type=int,
        nargs=3,
        help="one image's shape (default: the shape of the run's data, from its config.toml)",
    )
    parser.add_argument(
        "--no-standardize",
        action="store_true",
        help="export the network alone, for inputs already standardized as the run's were",
    )
    return parser


def _run_inputs(run_dir: str, input_shape, standardize: bool):
    """The run's model, one image's shape and the standardization (mean, std) to put in front of it."""

    model = Sequential.load(os.path.join(run_dir, "model.npz"))
    mean = std = None
    split_path = os.path.join(run_dir, "split.npz")
    if input_shape is None:
        config_path = os.path.join(run_dir, "config.toml")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"{run_dir} has no config.toml to take the input shape from; give --input-shape C H W"
            )
        from .data import load_dataset
        from .train.config import load_config

        input_shape = load_dataset(load_config(config_path).data).input_shape
    if standardize and os.path.lexists(split_path):
        from .train.rundir import load_standardization

        mean, std = load_standardization(split_path, int(input_shape[0]))
    return model, tuple(input_shape), mean, std


@one_line_errors
def main(argv=None) -> int:
    """``python -m minicnn.export RUN_DIR --onnx FILE``: 0 on success, 2 with one line on stderr otherwise."""
    args = build_parser().parse_args(argv)
    import_layer_modules(args.imports)
    if not os.path.isdir(args.run_dir):
        print(
            f"error: {show_path(args.run_dir)} is not a directory (expected a run directory written by "
            "train.py)",
            file=sys.stderr,
        )
        return 2
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.onnx))):
        print(f"error: the folder of {show_path(args.onnx)} does not exist", file=sys.stderr)
        return 2
    try:
        model, input_shape, mean, std = _run_inputs(args.run_dir, args.input_shape, not args.no_standardize)
        to_onnx(model, args.onnx, input_shape, mean=mean, std=std)
    except (ImportError, TypeError) as exc:  # OSError, ValueError, MemoryError: @one_line_errors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {show_path(args.onnx)}: input (N, {', '.join(map(str, input_shape))}), outputs logits and "
        f"probabilities{'' if mean is None else ' (standardization included)'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
