"""Command: ``python -m minicnn.explore`` (also ``minicnn-explore``); see :mod:`minicnn.see.explore`."""

from .see.explore import main

if __name__ == "__main__":
    raise SystemExit(main())
