"""Training: configs checked at load, model building, the training loop, the run directory, runs.

Imports :mod:`minicnn.nn` and :mod:`minicnn.data`; never the plotting code (the ``train.py``
command in :mod:`minicnn.cli` composes training, then figures).

- :mod:`~minicnn.train.config`: TOML configs as frozen dataclasses;
- :mod:`~minicnn.train.build`: a model from the config's layer specs;
- :mod:`~minicnn.train.trainer`: :class:`Trainer`, and the factories from a config to its objects;
- :mod:`~minicnn.train.rundir`: :class:`RunDir`, the files of a run;
- :mod:`~minicnn.train.runner`: :func:`prepare` and :func:`run`, a config in, a run directory out.
"""

from .build import build_model
from .rundir import RunDir
from .runner import TrainingInterrupted, prepare, run, seed_generators
from .trainer import DivergedError, Trainer, make_optimizer, make_schedule

__all__ = [
    "build_model",
    "Trainer",
    "DivergedError",
    "make_optimizer",
    "make_schedule",
    "RunDir",
    "TrainingInterrupted",
    "prepare",
    "run",
    "seed_generators",
]
