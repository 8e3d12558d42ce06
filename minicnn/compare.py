"""Command: ``python -m minicnn.compare`` (also ``minicnn-compare``); see :mod:`minicnn.see.compare`."""

from .see.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
