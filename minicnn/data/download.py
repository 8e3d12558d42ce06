"""Downloads into a local cache, verified against pinned SHA-256 sums.

A file is fetched from each of its URLs in turn (the dataset's official location first, then
mirrors) into a temporary file in the cache folder, hashed while it streams in, and renamed to its
final name only when its size and SHA-256 sum are the pinned ones. A failed, truncated or
interrupted transfer therefore never leaves a file that a later run would trust; a file already in
the cache is checked again every time it is used, and one that fails the check is removed.

Where files go: ``data.cache_dir`` in a config, else the ``MINICNN_DATA`` environment variable, else
``~/.cache/minicnn``; each dataset gets a sub-folder (``~/.cache/minicnn/mnist/``). Files put there
by hand are used as they are, after the same check.

Where they come from: the URLs pinned in :mod:`minicnn.data.sources`, or, when ``data.base_url`` or
the ``MINICNN_DATA_URL`` environment variable is set, ``<base_url>/<file name>`` only (a mirror of
your own, or the local server the tests start).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..io import file_kind, show_path
from .datasets import DataError

CACHE_ENV, URL_ENV = "MINICNN_DATA", "MINICNN_DATA_URL"
CHUNK = 1 << 20
TIMEOUT_S = 30


@dataclass(frozen=True)
class TransferLimits:
    """How long one file's transfer may take (``data.download_deadline_s`` and
    ``data.download_min_rate`` in a config).

    deadline_s : the whole transfer of one file from one URL, connection included.
    min_rate : bytes per second, averaged from the start, below which a transfer that has run longer
        than ``grace_s`` is abandoned (a server dripping a byte every few seconds never trips the
        per-read timeout).
    read_timeout_s : the longest wait for any one read.
    """

    deadline_s: float = 1800.0
    min_rate: float = 1024.0
    grace_s: float = 30.0
    read_timeout_s: float = TIMEOUT_S


class DownloadError(DataError):
    """A file could not be fetched, or what arrived (or sat in the cache) failed its checksum."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name, its exact size in bytes, its SHA-256 sum and where it lives.

    ``urls`` are tried in order; each ends in ``name``.
    """

    name: str
    size: int
    sha256: str
    urls: tuple[str, ...]


def cache_root(cache_dir: str = "") -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$MINICNN_DATA``, else ``~/.cache/minicnn``."""
    chosen = cache_dir or os.environ.get(CACHE_ENV, "") or os.path.join("~", ".cache", "minicnn")
    return Path(os.path.expanduser(chosen))


def urls_for(remote: RemoteFile, base_url: str = "") -> tuple[str, ...]:
    """The URLs to try: ``<base_url>/<name>`` when a base URL is set (argument or ``$MINICNN_DATA_URL``),
    else the pinned ones. A base URL must be http:// or https:// (DownloadError otherwise)."""
    base = base_url or os.environ.get(URL_ENV, "")
    if base and urllib.parse.urlsplit(base).scheme.lower() not in ("http", "https"):
        where = "data.base_url" if base_url else f"${URL_ENV}"
        raise DownloadError(f"{where} = {show_path(base)!r}: expected an http:// or https:// URL")
    return (f"{base.rstrip('/')}/{remote.name}",) if base else remote.urls


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(path: Path, remote: RemoteFile) -> bool:
    """True if ``path`` holds the pinned file; a wrong file there is removed (and reported)."""
    if path.is_symlink():
        raise DownloadError(
            f"{show_path(path)} is a symbolic link; minicnn does not follow links in its cache. "
            "Replace it with the file itself"
        )
    if not path.exists():
        return False
    if not path.is_file():
        raise DownloadError(
            f"{show_path(path)} is {file_kind(path)}; remove it so {remote.name} can be downloaded"
        )
    size = path.stat().st_size  # cheap first check: a wrong size needs no hashing
    if size == remote.size and sha256_of(path) == remote.sha256:
        return True
    try:
        path.unlink()
    except OSError as exc:
        raise DownloadError(
            f"{show_path(path)} is corrupt (size {size}, expected {remote.size}, or a wrong SHA-256 "
            f"sum) and cannot be removed: {exc.strerror}; delete it by hand"
        ) from None
    return False


def fetch(
    remote: RemoteFile,
    folder: Path,
    base_url: str = "",
    progress: bool = True,
    limits: TransferLimits | None = None,
) -> Path:
    """The path of ``remote`` in ``folder``, downloaded first if it is not there (or fails its check).

    Raises
    ------
    DownloadError
        One line naming the file, every URL tried with why it failed, and the folder where the file can
        be put by hand. Also when the folder cannot be written, and when a transfer runs past
        ``limits`` (:class:`TransferLimits`; its partial file is removed).
    """
    limits = TransferLimits() if limits is None else limits
    urls = urls_for(remote, base_url)
    path = Path(folder) / remote.name
    corrupt = path.exists() and not _cached(path, remote)
    if not corrupt and path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the data cache folder {show_path(path.parent)}: {exc.strerror}; set "
            f"data.cache_dir or ${CACHE_ENV} to a folder you can write"
        ) from None
    failures = []
    for url in urls:
        try:
            _download(url, path, remote, progress, limits)
            return path
        except _TransferError as exc:
            failures.append(f"{show_path(url)} ({' '.join(str(exc).split())})")
    removed = f"a corrupt {remote.name} was removed from the cache; " if corrupt else ""
    raise DownloadError(
        f"cannot download {remote.name}: {removed}tried {'; '.join(failures)}. "
        f"Without network, put {remote.name} (SHA-256 {remote.sha256}) in {show_path(path.parent)} "
        "by hand"
    )


class _TransferError(Exception):
    """One URL failed; the message says why in a few words."""


def _download(url: str, path: Path, remote: RemoteFile, progress: bool, limits: TransferLimits) -> None:
    """Stream ``url`` into a temporary file beside ``path``; rename it to ``path`` once verified."""
    try:
        handle = tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{remote.name}.", suffix=".part", delete=False
        )
    except OSError as exc:
        raise DownloadError(
            f"cannot write to the data cache folder {show_path(path.parent)}: {exc.strerror}; set "
            f"data.cache_dir or ${CACHE_ENV} to a folder you can write"
        ) from None
    try:
        with handle:
            digest = _stream(url, handle, remote, progress, limits)
        if digest != remote.sha256:
            raise _TransferError(f"SHA-256 {digest}, expected {remote.sha256}")
        os.replace(handle.name, path)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)


def _stream(url: str, out, remote: RemoteFile, progress: bool, limits: TransferLimits) -> str:
    """Copy ``url``'s body into the open file ``out``; return its SHA-256. Checks the size, the
    deadline and the rate as it goes."""
    digest, received, started = hashlib.sha256(), 0, time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": "minicnn"})
    timeout = min(limits.read_timeout_s, limits.deadline_s)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, _bar(remote, progress) as bar:
            if response.length is not None and response.length != remote.size:
                raise _TransferError(f"the server announces {response.length} bytes, expected {remote.size}")
            while chunk := response.read1(CHUNK):  # whatever has arrived: the limits are checked often
                received += len(chunk)
                if received > remote.size:
                    raise _TransferError(f"more than the expected {remote.size} bytes")
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
                _check_pace(received, time.monotonic() - started, limits)
    except urllib.error.HTTPError as exc:
        raise _TransferError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _TransferError(str(getattr(exc.reason, "strerror", None) or exc.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # resets, timeouts, a cut-off body
        raise _TransferError(f"{type(exc).__name__}: {exc}") from None
    if received != remote.size:
        raise _TransferError(f"transfer stopped after {received} of {remote.size} bytes")
    return digest.hexdigest()


def _check_pace(received: int, elapsed: float, limits: TransferLimits) -> None:
    """Abandon a transfer past its deadline, or slower than the minimum rate after the grace period."""
    if elapsed > limits.deadline_s:
        raise _TransferError(
            f"not finished after {limits.deadline_s:g} s (data.download_deadline_s), {received} bytes in"
        )
    if elapsed > limits.grace_s and received < limits.min_rate * elapsed:
        raise _TransferError(
            f"{received / elapsed:,.0f} bytes/s after {elapsed:.0f} s, below the minimum of "
            f"{limits.min_rate:g} (data.download_min_rate)"
        )


def _bar(remote: RemoteFile, progress: bool):
    """A tqdm bar in bytes (disabled when ``progress`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=remote.size,
        desc=remote.name,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=None if progress else True,
    )  # None: only on a terminal
