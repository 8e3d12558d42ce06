"""Data: the 8x8 digits, IDX and .npz files, splits, standardization and augmentation."""

from .datasets import (
    SOURCES, Dataset, DataError, as_images, as_labels, augment, batch_indices, channel_stats, load_dataset,
    load_digits_arrays, random_affine, random_shift, read_idx, read_npz_xy, split_indices, standardize,
    write_idx,
)

__all__ = ["SOURCES", "Dataset", "DataError", "as_images", "as_labels", "augment", "batch_indices",
           "channel_stats", "load_dataset", "load_digits_arrays", "random_affine", "random_shift", "read_idx",
           "read_npz_xy", "split_indices", "standardize", "write_idx"]
