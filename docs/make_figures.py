"""Draw every figure of docs/convolution.md into docs/figures/ (and print the numbers the guide quotes).

    python docs/make_figures.py                  # everything (trains the digits model, ~15-40 min on 2 cores)
    python docs/make_figures.py --run RUN_DIR    # reuse a finished default `python train.py` run (seed 0)
    python docs/make_figures.py --lvf-json FILE  # plot learned-vs-frozen from a saved
                                                 #   experiments/learned_vs_frozen.py result, not re-training
    python docs/make_figures.py --only gallery stride
    python docs/make_figures.py --out DIR        # write into DIR instead of docs/figures/

The slow parts are the digits model (one training run) and the learned-versus-frozen experiment
(two variants x five seeds). Everything else takes seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
FIGURES = DOCS / "figures"
DPI = 72  # modest: every committed PNG stays well under 200 KB
NAMES = (
    "correlation",
    "gallery",
    "filters",
    "filters_fast",
    "feature_maps",
    "kernel_recovery",
    "stride",
    "filter_ablation",
    "learned_vs_frozen",
    "learning",
)


def shrink_png(path) -> None:
    """Re-save a PNG with a 256-colour palette (Pillow comes with matplotlib): the photo-heavy
    figures drop to a fraction of their size with no visible change."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    small.save(path, optimize=True)


def experiment(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convolve_by_definition(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """True convolution, zero padded to the input's size: ``sum_{u,v} x[i - u, j - v] K[u, v]``,
    with u, v measured from the kernel's centre (what ``scipy.signal.convolve2d(mode="same")`` returns)."""
    kh, kw = kernel.shape
    ch, cw = kh // 2, kw // 2
    padded = np.pad(image, ((ch, ch), (cw, cw)))
    out = np.zeros_like(image, dtype=np.float64)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            for u in range(-ch, ch + 1):
                for v in range(-cw, cw + 1):
                    out[i, j] += padded[i - u + ch, j - v + cw] * kernel[u + ch, v + cw]
    return out


def correlation_figure(path) -> dict:
    """Conv2D (cross-correlation) with the flipped kernel equals true convolution with the kernel."""
    from minicnn.see.filters import conv_from_kernel
    from minicnn.see.gallery import load_digit
    from minicnn.see.plots import (
        KERNEL_CMAP,
        new_figure,
        save,
        show_image,
        symmetric_limit,
    )

    image = load_digit(0)
    kernel = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, -2.0]])  # no symmetry: the flip shows
    layer_plain = conv_from_kernel(kernel)
    layer_flipped = conv_from_kernel(kernel[::-1, ::-1].copy())
    correlation = layer_plain.forward(image[None, None])[0, 0]
    through_layer = layer_flipped.forward(image[None, None])[0, 0]
    by_definition = convolve_by_definition(image, kernel)
    numbers = {
        "max |Conv2D(flipped K) - convolution by definition|": float(
            np.abs(through_layer - by_definition).max()
        ),
        "max |Conv2D(K) - convolution by definition|": float(np.abs(correlation - by_definition).max()),
    }
    try:
        from scipy.signal import convolve2d

        numbers["max |Conv2D(flipped K) - scipy.signal.convolve2d(x, K, 'same')|"] = float(
            np.abs(through_layer - convolve2d(image, kernel, mode="same")).max()
        )
    except ImportError:
        pass
    fig = new_figure(11.0, 2.6)
    axes = fig.subplots(1, 5)
    show_image(axes[0], image, title="input x")
    for ax, values, title in (
        (axes[1], kernel, "kernel K"),
        (axes[2], kernel[::-1, ::-1], "K flipped (180°)"),
    ):
        m = symmetric_limit(values)
        ax.imshow(values, cmap=KERNEL_CMAP, vmin=-m, vmax=m)
        for (r, c), v in np.ndenumerate(values):
            ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=9)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    m = symmetric_limit(through_layer, by_definition, correlation)
    for ax, values, title in (
        (axes[3], through_layer, "Conv2D with K flipped"),
        (axes[4], by_definition, "convolution x * K\n(by the definition)"),
    ):
        image_artist = ax.imshow(values, cmap=KERNEL_CMAP, vmin=-m, vmax=m)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image_artist, ax=axes[3:].tolist(), shrink=0.85)
    diff = numbers["max |Conv2D(flipped K) - convolution by definition|"]
    fig.suptitle(
        f"A CNN layer computes cross-correlation; fed the flipped kernel it computes convolution "
        f"(largest difference {diff:.1e})",
        fontsize=10,
    )
    save(fig, path, dpi=DPI)
    return numbers


def default_run(run_dir) -> Path:
    """A finished run of the default ``python train.py`` (configs/digits.toml, seed 0): ``run_dir`` if
    given, else one trained now into runs/docs-default, exactly as the command does."""
    if run_dir is not None:
        return Path(run_dir)
    from minicnn.cli import main as train

    out = REPO / "runs" / "docs-default"
    if train(["--out", str(out), "--quiet", "--set", "output.figures=false"]) != 0:
        raise SystemExit("training the default model failed")
    return out


def learning_figures(run_dir: Path, out) -> None:
    """The default run's figures of learning: change from init, evolution (PNG and GIF), top patches,
    saliency and occlusion, class mean maps; prints the kernels' angles from initialization."""
    from minicnn.data import load_dataset
    from minicnn.nn.model import Sequential
    from minicnn.see import kernels, saliency
    from minicnn.see.change import load_kernel_history, run_kernel_change
    from minicnn.see.plots import save
    from minicnn.train.config import load_config

    model, initial = Sequential.load(run_dir / "model.npz"), Sequential.load(run_dir / "init.npz")
    dataset = load_dataset(load_config(run_dir / "config.toml").data)
    change = run_kernel_change(run_dir)
    layer = change["layer"]
    save(
        kernels.plot_filters_change(initial.get_layer(layer), model.get_layer(layer)),
        out("filters_learned"),
        dpi=DPI,
    )
    history = load_kernel_history(run_dir)
    save(kernels.plot_filters_evolution(history), out("filters_evolution"), dpi=DPI)
    kernels.animate_filters_evolution(history, out("filters_evolution", ".gif"))
    save(kernels.plot_top_patches(model, dataset.X_train, layer), out("top_patches"), dpi=DPI)
    blank = dataset.X_train.min(axis=(0, 2, 3))
    save(saliency.plot_saliency(model, dataset.X_test, dataset.y_test, blank), out("saliency"), dpi=DPI)
    first_relu, _ = saliency.conv_activation_layers(model)
    save(
        saliency.plot_class_mean_maps(model, dataset.X_test, dataset.y_test, first_relu),
        out("class_maps_first"),
        dpi=DPI,
    )
    print(
        f"  default run {run_dir}: first-layer kernel angles from init "
        f"{', '.join(f'{a:.1f}' for a in change['angles'])} degrees; norm ratios "
        f"{', '.join(f'{r:.2f}' for r in change['norm_ratios'])}"
    )


def digits_model(run_dir, config: str = "digits.toml"):
    """(trained model, initial model, X_test, y_test) for configs/<config>, seed 0 (or a finished run)."""
    from minicnn.nn.model import Sequential

    if run_dir is not None:
        from minicnn.see.inspect import load_test_split

        X_test, y_test = load_test_split(run_dir)
        return (
            Sequential.load(Path(run_dir) / "model.npz"),
            Sequential.load(Path(run_dir) / "init.npz"),
            X_test,
            y_test,
        )
    from minicnn.train import prepare
    from minicnn.train.config import load_config

    dataset, model, trainer = prepare(load_config(REPO / "configs" / config))
    initial = Sequential.from_architecture(model.architecture())
    initial.load_state_dict(model.state_dict())
    trainer.fit(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, progress=False)
    return model, initial, dataset.X_test, dataset.y_test


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a finished train.py run of configs/digits.toml to reuse")
    parser.add_argument(
        "--lvf-json", help="learned_vs_frozen.json written by experiments/learned_vs_frozen.py"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument(
        "--out", type=Path, default=FIGURES, help="folder to write into (default: docs/figures)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only)

    written = []

    def out(name, suffix=".png"):
        path = args.out / f"{name}{suffix}"
        written.append(path)
        return path

    if "correlation" in wanted:
        for what, value in correlation_figure(out("correlation")).items():
            print(f"  {what}: {value:.3g}")
    if "gallery" in wanted:
        from minicnn.see.gallery import plot_gallery
        from minicnn.see.plots import save

        save(plot_gallery(), out("gallery"), dpi=DPI)
    run_dir = (
        default_run(args.run) if wanted & {"filters", "feature_maps", "filter_ablation", "learning"} else None
    )
    if "learning" in wanted:
        learning_figures(run_dir, out)
    if wanted & {"filters", "feature_maps", "filter_ablation"}:
        from minicnn.see import plots as viz

        model, initial, X_test, y_test = digits_model(run_dir)
        accuracy = np.mean(model.predict(X_test) == y_test)
        print(f"  digits model: test accuracy {accuracy:.4f} on {len(y_test)} images")
        conv = experiment("filter_ablation").first_conv(model)
        if "filters" in wanted:
            from minicnn.see.filters import classic_match, match_label

            for k, w in enumerate(conv.weight.data):
                print(f"  kernel {k}: {match_label(classic_match(w[0]))}")
        if "feature_maps" in wanted:
            fig = viz.plot_feature_maps(
                model, X_test[0], max_channels=16, title=f"test image 0 (label {y_test[0]})"
            )
            viz.save(fig, out("feature_maps"), dpi=DPI)
            print(f"  feature maps of test image 0 (label {y_test[0]})")
        if "filter_ablation" in wanted:
            ablation = experiment("filter_ablation")
            result = ablation.ablate(model, X_test, y_test)
            viz.save(ablation.plot(result, conv.weight.data, len(y_test)), out("filter_ablation"), dpi=DPI)
            print(ablation.table(result, conv.weight.data))
    if "filters_fast" in wanted:
        # the small model without batch normalization (configs/digits_fast.toml): trains in seconds
        from minicnn.see import plots as viz

        model, initial, X_test, y_test = digits_model(None, config="digits_fast.toml")
        moved = np.linalg.norm(model.layers[0].weight.data - initial.layers[0].weight.data) / np.linalg.norm(
            initial.layers[0].weight.data
        )
        fig = viz.plot_filters_before_after(initial.layers[0], model.layers[0])
        fig.suptitle(
            f"configs/digits_fast.toml: first-layer kernels at initialization and learned "
            f"(moved {100 * moved:.0f}% of their norm)",
            fontsize=10,
        )
        viz.save(fig, out("filters_before_after_fast"), dpi=DPI)
        print(
            f"  digits_fast model: test accuracy {np.mean(model.predict(X_test) == y_test):.4f}; "
            f"first-layer kernels moved {moved:.2f} of their initial norm"
        )
    if "kernel_recovery" in wanted:
        recovery = experiment("kernel_recovery")
        results = recovery.run()
        recovery.plot(results, path=None).savefig(out("kernel_recovery"), dpi=DPI)
        print(recovery.table(results))
    if "stride" in wanted:
        stride = experiment("stride")
        image, kernel = stride.digit(0), stride.classic_kernel("sobel x")
        stride.plot(image, kernel, stride.strided_maps(image, kernel)).savefig(out("stride"), dpi=DPI)
    if "learned_vs_frozen" in wanted:
        lvf = experiment("learned_vs_frozen")
        if args.lvf_json:
            results = json.loads(Path(args.lvf_json).read_text())["results"]
        else:
            results = lvf.run(  # section 6.2 is about the most accurate model
                REPO / "configs" / "digits_best.toml",
                seeds=args.seeds,
                variants=("learned", "all frozen"),
                log=lambda text: print("  " + text, flush=True),
            )
        lvf.plot(results).savefig(out("learned_vs_frozen"), dpi=DPI)
        print(lvf.table(results))
    for path in written:
        if path.suffix == ".png":
            shrink_png(path)
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        print(f"wrote {shown} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
