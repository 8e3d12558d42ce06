"""Command: ``python -m minicnn.explore`` (also ``minicnn-explore``); the work is in :mod:`minicnn.see.explore`."""

from .see.explore import main

if __name__ == "__main__":
    raise SystemExit(main())
