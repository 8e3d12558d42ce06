"""Command: ``python -m minicnn.gallery`` (also ``minicnn-gallery``); the work is in :mod:`minicnn.see.gallery`."""

from .see.gallery import main

if __name__ == "__main__":
    raise SystemExit(main())
