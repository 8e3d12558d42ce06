"""minicnn.train.config: TOML -> frozen dataclasses, validation messages, --set overrides, writing TOML."""

import dataclasses
from pathlib import Path

import pytest

from minicnn.train.config import (
    Config,
    ConfigError,
    TrainConfig,
    apply_override,
    from_dict,
    load_config,
    to_toml,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

MINIMAL = """
[[model.layers]]
type = "Flatten"

[[model.layers]]
type = "Dense"
out_features = 10
"""


def _write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["digits.toml", "digits_best.toml", "digits_fast.toml", "idx_example.toml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, Config) and cfg.model.layers


def test_missing_sections_take_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.seed == 0 and cfg.data.source == "digits" and cfg.data.test_fraction == 0.2
    assert cfg.train == TrainConfig() and cfg.output.dir == "runs" and cfg.output.figures is True


def test_config_is_frozen(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[train]\nepoch = 3\n", "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
        ("[train]\nlearning_rate = 0.1\n", "(did you mean 'train.lr'?)"),
        ("[data.augment]\nshfit = 1\n", "(did you mean 'data.augment.shift'?)"),
        ("[trian]\nlr = 1\n", "unknown key 'trian' (did you mean 'train'?)"),
        ("sed = 1\n", "(did you mean 'seed'?)"),
    ],
)
def test_typos_are_rejected_with_the_nearest_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text + MINIMAL))
    assert expected in str(info.value)
    assert "valid keys" in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[train]\nepochs = "ten"\n', 'train.epochs = "ten": expected an integer, got str'),
        ("[train]\nepochs = 2.5\n", "train.epochs = 2.5: expected an integer"),
        ("[train]\nnesterov = 1\n", "train.nesterov = 1: expected true or false"),
        ("[train]\nlr = true\n", "train.lr = true: expected a number"),
        ('[data]\nstandardize = "yes"\n', 'data.standardize = "yes": expected true or false'),
        ("[train]\nbetas = [0.9]\n", "train.betas = [0.9]: expected a list of 2 numbers"),
        ("train = 3\n", "train: expected a table"),
    ],
)
def test_wrong_types_are_rejected_with_path_and_value(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text + MINIMAL))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[train]\nlr = -0.1\n", "train.lr = -0.1: must be > 0.0"),
        ("[train]\nepochs = 0\n", "train.epochs = 0: must be >= 1"),
        ("[train]\nlabel_smoothing = 1.0\n", "train.label_smoothing = 1.0: must be >= 0.0 and < 1.0"),
        (
            '[train]\noptimizer = "adamm"\n',
            'train.optimizer = "adamm": must be one of "sgd", "adam", "adamw"',
        ),
        (
            '[data]\nsource = "mnist9"\n',
            'data.source = "mnist9": must be one of "digits", "idx", "npz", "mnist5k"',
        ),
        ("[data]\ntest_fraction = 0\n", "data.test_fraction = 0: must be > 0.0"),
        ("[data.augment]\nshift = 9\n", "data.augment.shift = 9: must be >= 0 and <= 4"),
        ('[train]\ndevice = "gpu"\n', 'train.device = "gpu": must be one of "cpu", "cuda"'),
        ('[train]\noptimizer = "sgd"\nmomentum = 0.0\nnesterov = true\n', "needs train.momentum > 0"),
    ],
)
def test_out_of_range_values_are_rejected_with_what_is_allowed(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text + MINIMAL))
    assert expected in str(info.value)


def test_layers_are_required_and_must_be_tables(tmp_path):
    with pytest.raises(ConfigError, match="model.layers: missing"):
        load_config(_write(tmp_path, "seed = 1\n"))
    with pytest.raises(ConfigError, match="model.layers\\[0\\].type"):
        load_config(_write(tmp_path, "[[model.layers]]\nout_channels = 3\n"))


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "seed = = 1\n"))
    with pytest.raises(FileNotFoundError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_dataclasses_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="train.lr = 0"):
        TrainConfig(lr=0)
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)


# --- overrides ------------------------------------------------------------------------------------


def test_overrides_are_typed_as_their_field(tmp_path):
    path = _write(tmp_path, MINIMAL)
    cfg = load_config(
        path,
        [
            "train.lr=0.5",
            "train.epochs=7",
            "train.nesterov=true",
            "seed=3",
            "data.augment.shift=2",
            "output.dir=elsewhere",
            "train.betas=[0.8, 0.9]",
            "model.layers.1.out_features=10",
            "train.optimizer=sgd",
        ],
    )
    assert cfg.train.lr == 0.5 and cfg.train.epochs == 7 and cfg.train.nesterov is True
    assert cfg.seed == 3 and cfg.data.augment.shift == 2 and cfg.output.dir == "elsewhere"
    assert cfg.train.betas == (0.8, 0.9) and cfg.train.optimizer == "sgd"
    cfg = load_config(path, ["output.dir=123"])
    assert cfg.output.dir == "123"  # a string field keeps the text, even if it looks like a number


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("train.lr", "expected key.path=value"),
        ("train.epochs=many", "--set train.epochs=many: expected an integer"),
        ("train.nesterov=yes", "expected true or false"),
        ("train.lerning_rate=1", "(did you mean 'train.lr'?)"),
        ("train.lr.x=1", "train.lr is not a table"),
        ("model.layers.7.out_channels=1", "there are 2 layers"),
        ("train.epochs=0", "train.epochs = 0: must be >= 1"),
    ],
)
def test_bad_overrides_are_rejected(tmp_path, assignment, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL), [assignment])
    assert expected in str(info.value)


def test_override_creates_missing_sections():
    raw = {"model": {"layers": [{"type": "Flatten"}]}}
    apply_override(raw, "data.augment.rotate=5")
    assert raw["data"] == {"augment": {"rotate": 5.0}}


# --- writing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits.toml", "digits_best.toml", "digits_fast.toml", "idx_example.toml"])
def test_to_toml_round_trips(tmp_path, name):
    cfg = load_config(CONFIGS / name, ['output.dir=a "quoted" \\ dir', "model.layers.0.note=ünïcode"])
    path = tmp_path / "out.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_from_dict_rejects_unknown_layer_free_form_only_at_build_time():
    cfg = from_dict({"model": {"layers": [{"type": "Nope", "whatever": 1}]}})
    assert cfg.model.layers[0]["type"] == "Nope"  # checked by training.build_model, with the layer index
