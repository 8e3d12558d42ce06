"""The fast convolution lowering (private): the im2col derivation laid out for speed.

:mod:`minicnn.nn.functional` holds the textbook version a learner reads; this module computes the
same products with a memory layout and chunking chosen by measurement, and a bounded, reusable
scratch buffer. ``Conv2D(..., algorithm="fast")`` (the default) calls it; tests check that both
give the same outputs and gradients.
"""

from __future__ import annotations

import math

import numpy as np

from . import _threads, _winograd
from .functional import conv_output_size

#: Default bound (bytes) on the scratch memory of one convolution's forward + backward pass
#: (expanded matrix and its companions). Above it the batch is processed in chunks of samples,
#: so memory stays bounded whatever the batch size. Change it with :func:`set_workspace_limit`.
DEFAULT_WORKSPACE_BYTES = 64 * 2**20

# ----------------------------------------------------------------------------------------------
# Convolution: one matrix product per chunk of samples
# ----------------------------------------------------------------------------------------------
#
# The functions below follow the im2col derivation with a layout chosen for speed (each choice
# measured on a 2-core EPYC with NumPy 2.4 + OpenBLAS; numbers from benchmarks/bench_conv.py):
#
# * Channel-major: the padded input is stored as (C, Hp, N, Wb), so the expanded matrix is
#   (C*kh*kw + 1, Ho*N*Wg) and a whole chunk of samples is ONE matrix product with N*Ho*Wg
#   columns instead of N small ones (cifar-2 forward product 11.0 ms vs 11.7 ms for 64 batched
#   ones; digits-2 0.05 ms vs 0.11 ms).
# * Stride 1, "shifted rows": the grid of outputs is computed Wg = Wb wide instead of Wo, so
#   every row of the expanded matrix is the padded input itself, shifted by i*dh rows and j*dw
#   columns: one contiguous run per (channel, kernel offset), copied at memory speed (cifar-2:
#   1.2 ms instead of 8.4 ms for the strided im2col). Samples sit side by side in each row and
#   share their padding columns, Wb = W + max(left, right); the Wb - Wo extra outputs per row
#   read into the next sample, cost (Wb - Wo)/Wo more multiply-adds (cifar-2: 1/16) and are
#   cropped away.
# * Other strides, "phases": the padded input is split by row and column remainder modulo the
#   stride into sh*sw sub-images (one strided copy of the input); kernel offset (i, j) reads
#   phase (i*dh % sh, j*dw % sw) shifted by (i*dh // sh, j*dw // sw), so every row of the
#   expanded matrix is again one contiguous run, with Wg = ceil(Wp / sw) (stride-2 fwd+bwd
#   14.8 -> 11.9 ms, against one strided window per kernel offset as in im2col).
# * Bias folded in: the expanded matrix has a last row of ones, so the product adds the bias and
#   the weight-gradient product returns the bias gradient as its last column (saves a broadcast
#   pass over the output, 0.7 ms on cifar-2, and a reduction over the gradient, 0.5 ms).
# * Chunks on threads (:func:`_plan`): a pass with 4 MiB of scratch or more cuts the batch into
#   chunks that :func:`_threads.parts_available` threads take in turn, each with one BLAS thread,
#   instead of one thread cutting it and BLAS threading only the products: the expansion, col2im
#   and the transposes then run on every core too (fwd+bwd, 2 cores, best of alternating runs:
#   mnist-2 19.4 -> 17.5 ms, stride-2 31.4 -> 24.3 ms), and a thread slowed by another process
#   takes fewer chunks (under one busy loop: mnist-2 25.3 -> 20.0 ms with chunks taken in turn,
#   against one fixed part per thread).
#
# The output grid ``W @ cols`` is (C_out, Ho, N, Wg); one strided copy crops it and transposes
# it to NCHW.

_workspace_limit = DEFAULT_WORKSPACE_BYTES

#: Scratch per chunk that the batch is cut to even when the workspace limit allows more: chunks
#: whose expanded matrix stays in cache are faster, although backward must then rebuild the
#: expansion (fwd+bwd with 8 MiB vs 64 MiB chunks: mnist-2 N=256 47.3 -> 37.5 ms, cifar-1
#: 14.0 -> 7.1 ms, cifar-2 44.6 -> 40.0 ms; 4 to 16 MiB measured about equally fast).
CHUNK_BYTES = 8 * 2**20


def set_workspace_limit(nbytes: int) -> None:
    """Set the default bound (bytes) on the scratch memory of one convolution's forward + backward.

    Batches whose expanded matrices would need more are processed in chunks of samples. Used
    whenever ``workspace_bytes`` is None (``Conv2D.workspace_bytes`` is None unless set).
    """
    global _workspace_limit
    if not isinstance(nbytes, (int, np.integer)) or isinstance(nbytes, bool) or nbytes < 1:
        raise ValueError(f"set_workspace_limit: expected a positive number of bytes, got {nbytes!r}")
    _workspace_limit = int(nbytes)


def get_workspace_limit() -> int:
    """The default scratch-memory bound in bytes (see :func:`set_workspace_limit`)."""
    return _workspace_limit


class Workspace:
    """A scratch array that a layer reuses from call to call.

    A fresh array above glibc's mmap threshold (32 MB) is page-faulted in on every call: about
    3 ms for a 48 MB expanded matrix, a quarter of cifar-2's forward product. Arrays handed out
    are views of one buffer, so each call overwrites what the previous one returned.
    """

    def __init__(self):
        self._buffer = None
        self._parts: dict[int, Workspace] = {}

    def __getstate__(self):
        return {"_buffer": None, "_parts": {}}  # scratch, not state: a pickled layer does not carry it

    def part(self, k: int) -> Workspace:
        """The buffer of thread k of a pass split across threads (:func:`_plan`): this one for
        thread 0 (the caller), a buffer of its own for each other thread."""
        if k == 0:
            return self
        if k not in self._parts:
            self._parts[k] = Workspace()
        return self._parts[k]

    def array(self, shape, dtype) -> np.ndarray:
        size = math.prod(shape)
        if (
            self._buffer is None
            or self._buffer.dtype != dtype
            or self._buffer.size < size
            or not self._buffer.flags.writeable
        ):
            self._buffer = None  # release the old buffer before allocating the new one
            self._buffer = np.empty(size, dtype=dtype)
        return self._buffer[:size].reshape(shape)


class _Geometry:
    """Sizes of one convolution: padded input, output, and the output grid width ``wg``."""

    def __init__(self, x_shape, w_shape, stride, padding, dilation):
        self.c, self.h, self.w = x_shape[1:]
        self.c_out, _, self.kh, self.kw = w_shape
        (self.top, bottom), (self.left, right) = padding
        self.hp, self.wp = self.h + self.top + bottom, self.w + self.left + right
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        self.ho = conv_output_size(self.hp, self.kh, stride[0], 0, dilation[0])
        self.wo = conv_output_size(self.wp, self.kw, stride[1], 0, dilation[1])
        self.shifted = self.stride == (1, 1)
        # wb: columns per sample in a row of the padded layout. Shifted rows let neighbouring
        # samples share padding (one sample's right padding is the next one's left padding),
        # so a row holds W + max(left, right) columns per sample, not Wp (digits-2: 5, not 6),
        # as long as the Wo outputs still fit in them (padding wider than the kernel's reach)
        shared = self.shifted and min(self.left, right) <= (self.kw - 1) * self.dilation[1]
        self.wb = self.left + self.w + max(0, right - self.left) if shared else self.wp
        self.k = self.c * self.kh * self.kw
        # phases (stride > 1): the padded input split by row and column remainder modulo the
        # stride, (sh, sw) sub-images of (hq, wq) pixels each; hq = ceil(hp/sh), wq = ceil(wp/sw)
        self.hq, self.wq = -(-self.hp // self.stride[0]), -(-self.wp // self.stride[1])
        self.wg = self.wb if self.shifted else self.wq
        # the last sample's shifted rows read up to (kw-1)*dw (stride 1) or (kw-1)*dw // sw
        # (in a phase) columns past the input's end
        self.margin = (self.kw - 1) * self.dilation[1] // self.stride[1]

    def chunk_bytes(self, n: int, itemsize: int) -> int:
        """Scratch of one pass over n samples: the padded input and its gradient, the expanded
        matrix (reused for its gradient) and the output grid."""
        return n * itemsize * (2 * self.c * self.hp * self.wb + (self.k + 1 + self.c_out) * self.ho * self.wg)

    def most_per_chunk(self, itemsize: int, workspace_bytes, threads: int) -> int:
        """The most samples a chunk may hold so that a pass's scratch (:meth:`chunk_bytes`) fits in
        the workspace, shared by ``threads`` threads that each run their own chunks (at least 1)."""
        limit = min(CHUNK_BYTES, _workspace_limit if workspace_bytes is None else workspace_bytes) // threads
        return max(1, limit // self.chunk_bytes(1, itemsize))

    def cols_shape(self, n: int) -> tuple[int, int]:
        return self.k + 1, self.ho * n * self.wg

    def padded(self, n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        """A zeroed flat (C, Hp*n*Wb + margin) buffer and its (C, Hp, n, Wb) view."""
        flat = np.zeros((self.c, self.hp * n * self.wb + self.margin), dtype=dtype)
        return flat, flat[:, : self.hp * n * self.wb].reshape(self.c, self.hp, n, self.wb)

    def windows(self, flat: np.ndarray, n: int) -> np.ndarray:
        """View (C, kh, kw, Ho, n, Wg) of the padded input: ``[c, i, j, ho, s, w]`` is the pixel
        kernel offset (i, j) of output (ho, w) of sample s sees. A strided view, no copy."""
        item = flat.itemsize
        (sh, sw), (dh, dw) = self.stride, self.dilation
        row = n * self.wb * item  # bytes from one padded row to the next
        # np.ndarray over the buffer is numpy.lib.stride_tricks.as_strided without its 6 us overhead
        return np.ndarray(
            (self.c, self.kh, self.kw, self.ho, n, self.wg),
            flat.dtype,
            flat,
            strides=(flat.strides[0], dh * row, dw * item, sh * row, self.wb * item, sw * item),
        )

    def _phase_parts(self):
        """For each phase (a, b): which rows and columns of x land in it, and where.

        Padded row ``top + y`` lies in row phase ``(top + y) % sh`` at ``(top + y) // sh``; so
        phase a holds x's rows ``y0, y0 + sh, ...`` from phase row ``r0``. Same for columns.
        """
        (sh, sw) = self.stride
        for a in range(sh):
            y0 = (a - self.top) % sh
            r0, ny = (self.top + y0) // sh, len(range(y0, self.h, sh))
            for b in range(sw):
                x0 = (b - self.left) % sw
                c0, nx = (self.left + x0) // sw, len(range(x0, self.w, sw))
                yield a, b, (y0, r0, ny), (x0, c0, nx)

    def _offsets(self, n: int):
        """For each kernel offset (i, j) of a strided convolution: its phase and where its run of
        Ho*n*Wq inputs starts in that phase's flat array (pixel ``ho*sh + i*dh`` is row
        ``ho + i*dh // sh`` of phase ``i*dh % sh``)."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        for i in range(self.kh):
            for j in range(self.kw):
                start = (i * dh // sh) * n * self.wq + j * dw // sw
                yield i, j, (i * dh) % sh, (j * dw) % sw, start

    def _expand_phases(self, x: np.ndarray, cols: np.ndarray) -> None:
        """Strided lowering: split the padded input into phases (one strided copy of x per
        phase), then every row of the expanded matrix is one contiguous run of a phase, the same
        "shifted rows" as at stride 1 with Wg = Wq (stride-2 fwd+bwd 14.8 -> 11.9 ms)."""
        n = x.shape[0]
        sh, sw = self.stride
        size = self.hq * n * self.wq
        flat = np.zeros((self.c, sh, sw, size + self.margin), dtype=cols.dtype)
        phases = flat[..., :size].reshape(self.c, sh, sw, self.hq, n, self.wq)
        for a, b, (y0, r0, ny), (x0, c0, nx) in self._phase_parts():
            phases[:, a, b, r0 : r0 + ny, :, c0 : c0 + nx] = x[:, :, y0::sh, x0::sw].transpose(1, 2, 0, 3)
        length = self.ho * n * self.wq
        rows = cols[:-1].reshape(self.c, self.kh, self.kw, length)
        for i, j, a, b, start in self._offsets(n):
            rows[:, i, j] = flat[:, a, b, start : start + length]

    def input_grad_phases(self, dcols: np.ndarray, n: int, dx: np.ndarray) -> None:
        """Adjoint of :meth:`_expand_phases` into ``dx`` (n, C, H, W): contiguous adds into the
        phases, then one strided copy per phase back to the input's pixels."""
        sh, sw = self.stride
        size = self.hq * n * self.wq
        flat = np.zeros((self.c, sh, sw, size + self.margin), dtype=dcols.dtype)
        length = self.ho * n * self.wq
        rows = dcols.reshape(self.c, self.kh, self.kw, length)
        for i, j, a, b, start in self._offsets(n):
            flat[:, a, b, start : start + length] += rows[:, i, j]
        phases = flat[..., :size].reshape(self.c, sh, sw, self.hq, n, self.wq)
        for a, b, (y0, r0, ny), (x0, c0, nx) in self._phase_parts():
            dx[:, :, y0::sh, x0::sw] = phases[:, a, b, r0 : r0 + ny, :, c0 : c0 + nx].transpose(2, 0, 1, 3)

    def expand(self, x: np.ndarray, dtype, workspace) -> np.ndarray:
        """x (n, C, H, W) -> expanded matrix (C*kh*kw + 1, Ho*n*Wg), rows (c, i, j) then ones,
        in the ``workspace`` buffer when given."""
        n = x.shape[0]
        shape = self.cols_shape(n)
        out = workspace.array(shape, dtype) if workspace is not None else np.empty(shape, dtype=dtype)
        if self.shifted:
            flat, padded = self.padded(n, dtype)
            padded[:, self.top : self.top + self.h, :, self.left : self.left + self.w] = x.transpose(
                1, 2, 0, 3
            )
            out[:-1].reshape(self.c, self.kh, self.kw, self.ho, n, self.wg)[...] = self.windows(flat, n)
        else:
            self._expand_phases(x, out)
        out[-1] = 1
        return out

    def grad_grid(self, grad_out: np.ndarray, grids: Workspace, dtype) -> np.ndarray:
        """The output gradient (n, C_out, Ho, Wo) on the grid as a (C_out, Ho*n*Wg) matrix, zero in
        the extra columns, in the ``grids`` buffer."""
        grid = grids.array((self.c_out, self.ho, grad_out.shape[0], self.wg), dtype)
        grid[..., self.wo :] = 0
        grid[..., : self.wo] = grad_out.transpose(1, 2, 0, 3)
        return grid.reshape(self.c_out, -1)

    def input_grad(self, dcols: np.ndarray, n: int, dx: np.ndarray) -> None:
        """Sum the expanded matrix's gradient (C*kh*kw, Ho*n*Wg) back onto ``dx`` (n, C, H, W): the
        adjoint of :meth:`expand` (col2im at stride 1, the phases otherwise)."""
        if self.shifted:
            padded = self.expand_adjoint(dcols, n)  # (C, Hp, n, Wb)
            inside = padded[:, self.top : self.top + self.h, :, self.left : self.left + self.w]
            dx[...] = inside.transpose(2, 0, 1, 3)
        else:
            self.input_grad_phases(dcols, n, dx)

    def expand_adjoint(self, dcols: np.ndarray, n: int) -> np.ndarray:
        """Adjoint of :meth:`expand` at stride 1 (col2im): (C*kh*kw, Ho*n*Wg) -> gradient of the
        padded input, (C, Hp, n, Wb). One in-place add per kernel offset, where windows overlap.
        (Other strides: :meth:`input_grad_phases`.)"""
        flat, padded = self.padded(n, dcols.dtype)
        rows = dcols.reshape(self.c, self.kh, self.kw, self.ho * n * self.wg)
        dh, dw = self.dilation
        for i in range(self.kh):
            for j in range(self.kw):
                # a basic-slice view, not the overlapping strided view of windows(): NumPy would
                # copy the operands of an add into a view that overlaps itself
                start = i * dh * n * self.wb + j * dw
                flat[:, start : start + self.ho * n * self.wb] += rows[:, i, j]
        return padded


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride=(1, 1),
    padding=((0, 0), (0, 0)),
    dilation=(1, 1),
    workspace_bytes: int | None = None,
    keep_cols: bool = False,
    workspace: Workspace | None = None,
    winograd: bool | None = None,
    workers: int | None = None,
):
    """2-D cross-correlation (what CNN layers call convolution; see the module docstring).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in, kh, kw)
    bias : ndarray of shape (C_out,) or None
    stride, dilation : pairs of int
    padding : ((top, bottom), (left, right))
    workspace_bytes : int or None
        Bound on the scratch memory of the forward and the backward pass; larger batches are
        processed in chunks of samples. None: :func:`get_workspace_limit` (64 MiB by default).
    keep_cols : bool
        Also return the expanded input for :func:`conv2d_backward` when the batch fits in one chunk.
    workspace : Workspace, optional
        Build the expanded input in this reusable buffer instead of a fresh array.
    winograd : bool or None
        Compute a 3x3 stride-1 convolution with Winograd's F(2x2, 3x3) (:mod:`._winograd`):
        True uses it where it applies, False never, None: :func:`set_winograd`'s setting (off).
    workers : int or None
        Threads that take the batch's chunks of samples in turn (each with one BLAS thread
        meanwhile; :func:`_plan`). None: the BLAS thread count (:func:`_threads.parts_available`),
        or one thread for a batch whose scratch is under :data:`_threads.PARALLEL_MIN_BYTES`.

    Returns
    -------
    out : ndarray of shape (N, C_out, Ho, Wo)
    cols : ndarray of shape (C_in*kh*kw + 1, Ho*N*Wg), tuple of them, or None
        Only when ``keep_cols``: the expanded input, one per thread's chunk (a tuple) when the
        batch was split across threads; None when a thread processed several chunks (keeping every
        chunk's matrix for backward measured slower than rebuilding it there, while the chunk is
        still in cache: stride-2 fwd+bwd 12.6 vs 11.9 ms, cifar-2 43 vs 38 ms). Channel-major
        layout (see above): ``Wg = W + max(left, right)`` at stride 1, ``Wo`` otherwise; the
        last row is ones. With Winograd, a :class:`_winograd.Saved` (the transformed input).
    """
    dtype = np.result_type(x, weight)
    if use_winograd(x.shape, weight.shape, stride, padding, dilation, winograd):
        out, saved = _winograd_conv2d(x, weight, bias, padding, dtype, workspace_bytes)
        return (out, saved) if keep_cols else out
    g = _Geometry(x.shape, weight.shape, stride, padding, dilation)
    w2d = _weight_matrix(weight, bias, g, dtype)
    out, cols = _forward_chunks(g, x, w2d, bias is not None, dtype, workspace_bytes, workspace, workers)
    return (out, cols) if keep_cols else out


def _weight_matrix(weight: np.ndarray, bias: np.ndarray | None, g: _Geometry, dtype) -> np.ndarray:
    """The filters as a (C_out, C_in*kh*kw) matrix, with the bias as a last column when there is one."""
    w2d = weight.reshape(g.c_out, g.k).astype(dtype, copy=False)
    if bias is not None:
        w2d = np.concatenate([w2d, bias.astype(dtype, copy=False)[:, None]], axis=1)
    return w2d


def _plan(g: _Geometry, n: int, itemsize: int, workspace_bytes, workers) -> tuple[list, int, bool]:
    """How a pass over n samples is cut: its chunks (start, stop), the threads that run them, and
    whether the pass is small (then one thread, with one BLAS thread: :func:`_threads.run_parts`).

    Each thread gets an equal share of the scratch bound; chunks are equal, at least one per
    thread. With more chunks than threads, each thread takes the next chunk when it finishes one,
    so a thread that shares its core with another process does fewer (:func:`_threads.run_tasks`).
    """
    nbytes = g.chunk_bytes(n, itemsize)
    threads = _threads.threads_for(n, nbytes, workers)
    count = -(-n // g.most_per_chunk(itemsize, workspace_bytes, threads))
    # a multiple of the thread count, so that no thread idles at the end on a quiet machine
    # (mnist-2, 32 samples: 3 chunks ran in the time of 4, 356 us per sample against 281 for 64)
    count = min(n, -(-count // threads) * threads)
    # chunks of equal size: no small last chunk whose products run slowly (stride-2, 64 samples:
    # 5 chunks of 13 instead of 4 of 15 and one of 4)
    return _threads.split(n, count), threads, nbytes < _threads.PARALLEL_MIN_BYTES


def _thread_buffers(workspace: Workspace | None, threads: int) -> tuple[list, list]:
    """Each thread's buffers for a pass: its expanded matrix (the part of ``workspace`` when given)
    and its output-gradient or output grid, both reused by the chunks the thread runs in turn."""
    spaces = [workspace.part(t) if workspace is not None else Workspace() for t in range(threads)]
    return spaces, [Workspace() for _ in range(threads)]


def _forward_chunks(g: _Geometry, x, w2d, with_bias: bool, dtype, workspace_bytes, workspace, workers):
    """``W @ cols`` chunk by chunk of samples, on the threads of :func:`_plan`; returns the output
    and what :func:`conv2d_backward` can reuse (see :func:`conv2d`'s ``cols``)."""
    n = x.shape[0]
    out = np.empty((n, g.c_out, g.ho, g.wo), dtype=dtype)
    chunks, threads, small = _plan(g, n, out.itemsize, workspace_bytes, workers)
    spaces, grids = _thread_buffers(workspace, threads)

    def run(k: int, t: int) -> np.ndarray:
        start, stop = chunks[k]
        cols = g.expand(x[start:stop], dtype, spaces[t])
        grid = np.matmul(
            w2d, cols if with_bias else cols[:-1], out=grids[t].array((g.c_out, cols.shape[1]), dtype)
        )
        # crop the extra columns and transpose the grid to NCHW in one strided copy
        grid = grid.reshape(g.c_out, g.ho, stop - start, g.wg)
        out[start:stop].transpose(1, 2, 0, 3)[...] = grid[..., : g.wo]
        return cols

    kept = _threads.run_tasks(run, len(chunks), threads, one_blas_thread=small)
    if len(chunks) > threads:
        return out, None  # a thread's buffers held several chunks in turn
    return out, (kept[0] if len(kept) == 1 else tuple(kept))


def conv2d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride=(1, 1),
    padding=((0, 0), (0, 0)),
    dilation=(1, 1),
    cols: np.ndarray | tuple | None = None,
    need_input_grad: bool = True,
    need_weight_grad: bool = True,
    workspace_bytes: int | None = None,
    overwrite_cols: bool = False,
    workspace: Workspace | None = None,
    winograd: bool | None = None,
    workers: int | None = None,
):
    """Gradients of :func:`conv2d` (``winograd`` and ``workers`` as there).

    Parameters
    ----------
    grad_out : ndarray of shape (N, C_out, Ho, Wo)
    x : ndarray of shape (N, C_in, H, W)
        The forward input (unpadded).
    weight : ndarray of shape (C_out, C_in, kh, kw)
    cols : ndarray or tuple, optional
        The expanded input that ``conv2d(..., keep_cols=True)`` returned; rebuilt chunk by chunk
        (in ``workspace`` when given) otherwise, or where the batch is now split differently.
    overwrite_cols : bool
        Let the input gradient's expanded matrix take the memory of ``cols``, which is then
        garbage: the pass needs no second matrix of that size.

    Returns
    -------
    dx : ndarray of shape (N, C_in, H, W) or None
    dweight : ndarray of shape (C_out, C_in, kh, kw) or None
    dbias : ndarray of shape (C_out,)

    With ``cols`` the expanded input, ``G`` the output gradient on the grid as a (C_out, columns)
    matrix and ``W`` the weight as a (C_out, C_in*kh*kw) matrix: ``[dW | dbias] = G @ cols.T``
    (the row of ones gives the bias) and ``dcols = W.T @ G``, summed back onto the input by the
    adjoint of the expansion (col2im).
    """
    dtype = np.result_type(x, weight)
    if use_winograd(x.shape, weight.shape, stride, padding, dilation, winograd):
        return _winograd_conv2d_backward(
            grad_out, x, weight, padding, dtype, cols, need_input_grad, need_weight_grad, workspace_bytes
        )
    g = _Geometry(x.shape, weight.shape, stride, padding, dilation)
    if isinstance(cols, _winograd.Saved):
        cols = None
    dx = np.empty(x.shape, dtype=dtype) if need_input_grad else None
    w2d = weight.reshape(g.c_out, g.k).astype(dtype, copy=False)
    dweight_bias = _backward_chunks(
        g, grad_out, x, w2d, cols, dx, need_weight_grad, overwrite_cols, workspace_bytes, workspace, workers
    )
    dweight = dweight_bias[:, :-1].reshape(weight.shape) if need_weight_grad else None
    return dx, dweight, np.ascontiguousarray(dweight_bias[:, -1])


def _backward_chunks(
    g: _Geometry,
    grad_out,
    x,
    w2d,
    cols,
    dx,
    need_weight_grad: bool,
    overwrite_cols: bool,
    workspace_bytes,
    workspace,
    workers,
) -> np.ndarray:
    """The two backward products chunk by chunk, on the threads of :func:`_plan`: fills ``dx``
    (when given) and returns ``[dW | dbias]``, the chunks' shares summed in chunk order (the same
    result however the threads shared them). ``cols``: what :func:`conv2d` kept, used where the
    chunks are the same."""
    n, dtype = x.shape[0], w2d.dtype
    chunks, threads, small = _plan(g, n, w2d.itemsize, workspace_bytes, workers)
    kept = cols if isinstance(cols, tuple) else (cols,)
    if len(kept) != len(chunks) or any(
        c is None or c.shape != g.cols_shape(stop - start) for c, (start, stop) in zip(kept, chunks)
    ):
        kept = (None,) * len(chunks)
    spaces, grids = _thread_buffers(workspace, threads)
    shares = _threads.OrderedSum()

    def run(k: int, t: int) -> None:
        start, stop = chunks[k]
        grid = g.grad_grid(grad_out[start:stop], grids[t], dtype)
        chunk_cols = kept[k] if kept[k] is not None else g.expand(x[start:stop], dtype, spaces[t])
        shares.add(k, grid @ chunk_cols.T if need_weight_grad else grid.sum(axis=1))
        if dx is not None:
            reuse = kept[k] is None or (overwrite_cols and chunk_cols.flags.writeable)
            dcols = np.matmul(w2d.T, grid, out=chunk_cols[:-1] if reuse else None)
            g.input_grad(dcols, stop - start, dx[start:stop])

    _threads.run_tasks(run, len(chunks), threads, one_blas_thread=small)
    if need_weight_grad:
        return shares.total
    dweight_bias = np.zeros((g.c_out, g.k + 1), dtype=dtype)
    dweight_bias[:, -1] = shares.total
    return dweight_bias


# ----------------------------------------------------------------------------------------------
# Winograd F(2x2, 3x3): the same convolution with 2.25 times fewer multiplications
# ----------------------------------------------------------------------------------------------

#: Whether :func:`conv2d` uses Winograd where it applies when its ``winograd`` argument is None
#: (see :func:`set_winograd`). Off: measured side by side on the 2-core EPYC of issue 13, two
#: BLAS threads, no other job, forward + backward, F(2x2, 3x3) was slower than the shifted-rows
#: im2col (mnist-2 36.3 vs 17.4 ms, cifar-2 90.5 vs 85.0 ms; benchmarks/bench_conv.py):
#: its 16 products have only C_in as inner dimension (32, 64) instead of 9*C_in, so BLAS runs them
#: well below the speed of the one large product, and the transforms take back the rest.
_winograd_default = False


def set_winograd(enabled: bool) -> None:
    """Use Winograd's F(2x2, 3x3) for every 3x3, stride-1, undilated convolution (True) or never
    (False, the default), unless a call's ``winograd`` argument says otherwise."""
    global _winograd_default
    if not isinstance(enabled, bool):
        raise TypeError(f"set_winograd: expected True or False, got {enabled!r}")
    _winograd_default = enabled


def use_winograd(x_shape, w_shape, stride, padding, dilation, winograd: bool | None = None) -> bool:
    """Whether :func:`conv2d` takes the Winograd path: ``winograd`` (None: :func:`set_winograd`'s
    setting), and only where F(2x2, 3x3) applies (3x3 kernel, stride 1, no dilation, padding <= 2)."""
    chosen = _winograd_default if winograd is None else winograd
    return bool(chosen) and _winograd.applies(w_shape, stride, dilation, padding)


def _winograd_chunk(x_shape, c_out: int, padding, itemsize: int, workspace_bytes) -> int:
    """Samples per chunk so that one Winograd pass's scratch fits (equal chunks, as for im2col)."""
    limit = min(CHUNK_BYTES, _workspace_limit if workspace_bytes is None else workspace_bytes)
    one = _winograd.Tiles((1, *x_shape[1:]), c_out, padding).scratch_bytes(itemsize)
    n = x_shape[0]
    most = max(1, min(n, limit // one))
    return -(-n // -(-n // most))


def _winograd_conv2d(x, weight, bias, padding, dtype, workspace_bytes):
    """Forward by F(2x2, 3x3), chunk by chunk; returns (out, Saved or None when chunked)."""
    n, c_out = x.shape[0], weight.shape[0]
    u = _winograd.kernel_transform(weight, dtype)
    tiles = _winograd.Tiles(x.shape, c_out, padding)
    out = np.empty((n, c_out, tiles.ho, tiles.wo), dtype=dtype)
    chunk = _winograd_chunk(x.shape, c_out, padding, out.itemsize, workspace_bytes)
    bias = None if bias is None else bias.astype(dtype, copy=False)
    for start in range(0, n, chunk):
        v = _winograd.conv2d_chunk(
            x[start : start + chunk].astype(dtype, copy=False), u, padding, out[start : start + chunk], bias
        )
    return out, (_winograd.Saved(u, v) if chunk >= n else None)


def _winograd_conv2d_backward(
    grad_out, x, weight, padding, dtype, saved, need_input_grad, need_weight_grad, workspace_bytes
):
    """Backward by F(2x2, 3x3), chunk by chunk, reusing the forward's transforms when ``saved`` holds them."""
    saved = saved if isinstance(saved, _winograd.Saved) else None
    n, c_out = x.shape[0], weight.shape[0]
    u = saved.u if saved is not None else _winograd.kernel_transform(weight, dtype)
    chunk = (
        n
        if saved is not None
        else _winograd_chunk(x.shape, c_out, padding, np.dtype(dtype).itemsize, workspace_bytes)
    )
    dx = np.empty(x.shape, dtype=dtype) if need_input_grad else None
    du = np.zeros_like(u) if need_weight_grad else None
    dbias = np.zeros(c_out, dtype=dtype)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        dbias += _winograd.conv2d_backward_chunk(
            grad_out[start:stop].astype(dtype, copy=False),
            x[start:stop].astype(dtype, copy=False),
            u,
            padding,
            v=None if saved is None else saved.v,
            dx=None if dx is None else dx[start:stop],
            du=du,
        )
    dweight = _winograd.kernel_transform_adjoint(du) if need_weight_grad else None
    return dx, dweight, dbias
