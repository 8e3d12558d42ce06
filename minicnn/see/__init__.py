"""Seeing what was learned: figures of kernels and feature maps, the classic filters, the gallery, inspect,
the explorer page (:mod:`minicnn.see.explore`).

Reads models (:mod:`minicnn.nn`) and data (:mod:`minicnn.data`); nothing in training imports it.
"""
