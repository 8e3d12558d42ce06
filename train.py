"""Train a minicnn model from a config: ``python train.py [--config PATH] [--set key=value] ...``.

All the logic lives in :mod:`minicnn.cli` (also installed as the ``minicnn-train`` command).
"""

from minicnn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
