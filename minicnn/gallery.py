"""Command: ``python -m minicnn.gallery`` (also ``minicnn-gallery``); see :mod:`minicnn.see.gallery`."""

from .see.gallery import main

if __name__ == "__main__":
    raise SystemExit(main())
