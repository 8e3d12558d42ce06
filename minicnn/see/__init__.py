"""Seeing what was learned: figures of kernels and feature maps, the classic filters, the gallery, inspect,
the explorer page (:mod:`minicnn.see.explore`), and the comparison of runs (:mod:`minicnn.see.compare`).

Reads models (:mod:`minicnn.nn`) and data (:mod:`minicnn.data`); nothing in training imports it.
"""
