"""Threads: how many cores minicnn's passes use (the public face of the private :mod:`._threads`).

``set_num_threads(n)`` / ``get_num_threads()`` set and read the count (BLAS's and minicnn's own
parts); :class:`AutoThreads` chooses it from the load of the cores this process may run on, while
training (``train.py --threads 0``, the default).
"""

from ._threads import AutoThreads, get_num_threads, set_num_threads

__all__ = ["AutoThreads", "get_num_threads", "set_num_threads"]
