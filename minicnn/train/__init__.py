"""Training: configs checked at load, the training loop, checkpoints and the run directory.

Imports :mod:`minicnn.nn` and :mod:`minicnn.data`; never the plotting code (the ``train.py``
command in :mod:`minicnn.cli` composes training, then figures).
"""
