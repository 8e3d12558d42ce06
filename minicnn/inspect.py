"""Command: ``python -m minicnn.inspect`` (also ``minicnn-inspect``); see :mod:`minicnn.see.inspect`."""

from .see.inspect import main

if __name__ == "__main__":
    raise SystemExit(main())
