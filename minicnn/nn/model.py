"""Sequential: layers applied in order, with batched prediction, a summary, and safe save / load."""

from __future__ import annotations

import json

import numpy as np

from ..io import load_npz, save_npz_atomic
from .layers import LAYERS, Layer
from .parameter import Parameter

FORMAT = "minicnn.Sequential/1"
_ARCH_KEY = "__architecture__"


class Sequential:
    """A stack of layers: ``Sequential(Conv2D(...), ReLU(), ...)`` or ``Sequential([layers])``.

    Attributes
    ----------
    layers : list of Layer
        ``model.layers[0].weight.data`` are the first convolution's kernels, (out, in, kh, kw).
    """

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a minicnn Layer")
        self.layers: list[Layer] = list(layers)
        self.training = True

    # --- computing -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate d loss / d output through every layer; parameter gradients accumulate.

        With ``need_input_grad=False`` the first layer skips its input gradient (a training step
        never needs it) and None is returned.
        """
        first = self.layers[0] if self.layers else None
        saved = getattr(first, "compute_input_grad", None)
        if saved is not None:
            first.compute_input_grad = need_input_grad
        try:
            for layer in reversed(self.layers):
                grad_out = layer.backward(grad_out)
        finally:
            if saved is not None:
                first.compute_input_grad = saved
        return grad_out

    def predict_proba(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Softmax of the outputs in eval mode, in batches; the previous mode is restored.

        X : (N, C, H, W) -> (N, K).
        """
        from .functional import softmax
        return softmax(self._predict_outputs(X, batch_size))

    def predict(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Index of the largest output, (N,), computed in eval mode in batches."""
        return self._predict_outputs(X, batch_size).argmax(axis=1)

    def _predict_outputs(self, X, batch_size: int) -> np.ndarray:
        if not isinstance(X, np.ndarray):
            raise TypeError(f"Sequential.predict: expected a numpy.ndarray, got {type(X).__name__}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"Sequential.predict: batch_size must be a positive int, got {batch_size!r}")
        was_training = self.training
        self.eval()
        try:
            chunks = [self.forward(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
        finally:
            self.train(was_training)
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))

    # --- parameters and modes ---------------------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """``[("0.weight", Parameter), ("0.bias", Parameter), ...]``: PyTorch's naming."""
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers) for name, p in layer.named_parameters()]

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode: bool = True) -> "Sequential":
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self) -> "Sequential":
        return self.train(False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed as PyTorch keys them (``"0.weight"``)."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        for i, layer in enumerate(self.layers):
            for name, buf in layer.buffers().items():
                state[f"{i}.{name}"] = buf.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values into the model's arrays in place; keys and shapes must match exactly."""
        targets = {name: p.data for name, p in self.named_parameters()}
        for i, layer in enumerate(self.layers):
            targets.update({f"{i}.{name}": buf for name, buf in layer.buffers().items()})
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise KeyError(f"Sequential.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, target in targets.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"Sequential.load_state_dict: {name} expected shape {target.shape}, "
                                 f"got {value.shape}")
            target[...] = value

    # --- description --------------------------------------------------------------------------------
    def summary(self, input_shape) -> str:
        """A table of layers, output shapes and parameter counts for inputs of ``input_shape``
        (C, H, W) or (N, C, H, W), like Keras's ``model.summary()``. Runs one zero sample in eval mode."""
        shape = tuple(input_shape)
        if len(shape) in (1, 3):
            shape = (1,) + shape
        dtype = next((p.dtype for p in self.parameters()), np.float32)
        x = np.zeros(shape, dtype=dtype)
        rows = [("Layer", "Output shape", "Params")]
        total = trainable = 0
        was_training = self.training
        self.eval()
        try:
            for i, layer in enumerate(self.layers):
                x = layer.forward(x)
                count = sum(p.size for p in layer.parameters())
                total += count
                trainable += sum(p.size for p in layer.parameters() if p.requires_grad)
                rows.append((f"{i}: {layer!r}", str((None,) + x.shape[1:]).replace("None", "N"), f"{count:,}"))
        finally:
            self.train(was_training)
        widths = [max(len(r[k]) for r in rows) for k in range(3)]
        line = "-" * (sum(widths) + 4)
        fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"  # noqa: E731
        body = [fmt(rows[0]), line] + [fmt(r) for r in rows[1:]] + [line]
        body += [f"Input shape: {(None,) + shape[1:]}".replace("None", "N"),
                 f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                 f"Non-trainable params: {total - trainable:,}"]
        return "\n".join(body)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def architecture(self) -> list[dict]:
        """The layers as ``[{"type": "Conv2D", ...constructor arguments}]`` (JSON-friendly)."""
        return [{"type": type(layer).__name__, **layer.get_config()} for layer in self.layers]

    @classmethod
    def from_architecture(cls, spec: list[dict]) -> "Sequential":
        """Build a model from :meth:`architecture`'s output (weights freshly initialized)."""
        layers = []
        for i, item in enumerate(spec):
            item = dict(item)
            kind = item.pop("type", None)
            if kind not in LAYERS:
                raise ValueError(f"Sequential: layer {i} has unknown type {kind!r}; known: {sorted(LAYERS)}")
            layers.append(LAYERS[kind](**item))
        return cls(layers)

    # --- files -------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the architecture (JSON) and every weight and buffer to a ``.npz`` file.

        The write is atomic: a temporary file in the same folder, then a rename, so an interrupted
        save never replaces a good file with a broken one.
        """
        arrays = self.state_dict()
        meta = {"format": FORMAT, "layers": self.architecture(),
                "frozen": [name for name, p in self.named_parameters() if not p.requires_grad]}
        arrays[_ARCH_KEY] = np.array(json.dumps(meta))
        save_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path) -> "Sequential":
        """Rebuild a model saved by :meth:`save`. Never unpickles; a foreign or broken file raises ValueError."""
        arrays = load_npz(path)
        if _ARCH_KEY not in arrays:
            raise ValueError(f"Sequential.load: {path} is not a minicnn model file (no architecture record)")
        try:
            meta = json.loads(str(arrays.pop(_ARCH_KEY)))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            model = cls.from_architecture(meta["layers"])
            model.load_state_dict(arrays)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"Sequential.load: {path} does not hold a valid minicnn model: {exc}") from None
        frozen = set(meta.get("frozen", []))
        for name, p in model.named_parameters():
            p.requires_grad = name not in frozen
        return model
