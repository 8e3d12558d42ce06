"""Winograd's minimal filtering F(2x2, 3x3) for 3x3, stride-1 convolutions (private, fast path).

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). The output is cut into
2x2 tiles; each needs the 4x4 tile of padded input around it. For one tile and one channel pair

    Y = A^T [ (G g G^T) * (B^T d B) ] A

with ``g`` the 3x3 kernel, ``d`` the 4x4 input tile, ``*`` the element-wise product and the
constant matrices below. The 16 element-wise products, summed over input channels, are 16 matrix
products ``M[xi] = U[xi] @ V[xi]`` of (C_out, C_in) by (C_in, tiles): 16 multiplications per tile
instead of 36 (2.25 times fewer) for the same exact result; in float32 the transforms add
rounding of a few units in the last place.

Backward is the adjoint of the same steps (so float64 gradients are exact): the output gradient's
tiles become ``dM = A dY A^T``; ``dU[xi] = dM[xi] @ V[xi]^T`` gives the weight gradient
``G^T dU G``, and ``dV[xi] = U[xi]^T @ dM[xi]`` goes back through ``B dV B^T`` onto the input.

Layout (as in :mod:`._lowering`, channel-major, samples side by side in a row): the padded input
is split into its 2x2 "phases" (even/odd rows and columns), each (C, hq, n, wq), hq = tiles down + 1,
wq = tiles across + 1. Tile element (i, j) of every tile then sits at one offset of phase
(i % 2, j % 2), so each transform step is a few whole-array additions of shifted contiguous runs,
not a pass per tile; the last tile column of each sample (wq - 1 = tiles across) reads into the
next sample and is dropped.
"""

from __future__ import annotations

import numpy as np

# B^T, G and A^T of F(2x2, 3x3) (Lavin and Gray, section 4.1)
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
#: The output transform of a whole tile, (4, 16): ``vec(A^T M A) = kron(A^T, A^T) @ vec(M)``.
OUTPUT_TRANSFORM = np.kron(A_T, A_T)
#: The transposed input transform of a whole tile, (16, 16): ``vec(B dV B^T) = kron(B, B) @ vec(dV)``.
INPUT_TRANSFORM_ADJOINT = np.kron(B_T, B_T).T


def applies(kernel_shape, stride, dilation, padding) -> bool:
    """Whether F(2x2, 3x3) computes this convolution: 3x3 kernel, stride 1, no dilation, padding
    at most 2 on each side (every tile then overlaps the image)."""
    return (
        tuple(kernel_shape[2:]) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and all(0 <= p <= 2 for pair in padding for p in pair)
    )


class Tiles:
    """Sizes of one F(2x2, 3x3) convolution of n samples."""

    def __init__(self, x_shape, c_out: int, padding):
        self.n, self.c, self.h, self.w = x_shape
        self.c_out = c_out
        (self.top, bottom), (self.left, right) = padding
        self.ho, self.wo = self.h + self.top + bottom - 2, self.w + self.left + right - 2
        self.th, self.tw = -(-self.ho // 2), -(-self.wo // 2)  # tiles down and across
        self.hq, self.wq = self.th + 1, self.tw + 1  # phase rows and columns
        self.row = self.n * self.wq  # one phase row, all samples
        self.length = self.th * self.row  # tile columns (with dropped ones)

    def scratch_bytes(self, itemsize: int) -> int:
        """Forward + backward scratch for these n samples: phases, V and its row stage, M, tiles."""
        per = (
            self.c * (4 * self.hq * self.row + 8 * self.length + 16 * self.length)
            + self.c_out * 20 * self.length
        )
        return itemsize * per

    def phase_parts(self):
        """For each phase (a, b): x's rows ``y0::2`` go to phase rows from ``r0`` (``ny`` of them),
        x's columns ``x0::2`` to phase columns from ``c0`` (``nx`` of them)."""
        for a in range(2):
            y0 = (a - self.top) % 2
            r0, ny = (self.top + y0) // 2, len(range(y0, self.h, 2))
            for b in range(2):
                x0 = (b - self.left) % 2
                c0, nx = (self.left + x0) // 2, len(range(x0, self.w, 2))
                yield a, b, (y0, r0, ny), (x0, c0, nx)

    def phases(self, x: np.ndarray, dtype) -> np.ndarray:
        """x (n, C, H, W) -> zero-padded phases, flat (C, 2, 2, hq*n*wq + 1): element
        ``[c, a, b, r*n*wq + s*wq + q]`` is padded pixel (2r + a, 2q + b) of sample s."""
        flat = np.zeros((self.c, 2, 2, self.hq * self.row + 1), dtype=dtype)
        grid = flat[..., :-1].reshape(self.c, 2, 2, self.hq, self.n, self.wq)
        for a, b, (y0, r0, ny), (x0, c0, nx) in self.phase_parts():
            grid[:, a, b, r0 : r0 + ny, :, c0 : c0 + nx] = x[:, :, y0::2, x0::2].transpose(1, 2, 0, 3)
        return flat

    def input_transform(self, flat: np.ndarray) -> np.ndarray:
        """Phases -> V = B^T d B for every tile, (16, C, length): rows (B^T d), then columns (. B).

        Tile row i of every tile is phase row ``i // 2`` further down in row phase ``i % 2``; the
        same for columns. So each of B^T's rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3) is one
        subtraction or addition of two shifted runs, for all tiles and channels at once.
        """
        length, row = self.length, self.row
        rows = np.empty((4, self.c, 2, length + 1), dtype=flat.dtype)

        def d(i):  # tile row i of all tiles, both column phases: (C, 2, length + 1)
            start = (i // 2) * row
            return flat[:, i % 2, :, start : start + length + 1]

        _b_transpose_rows(d, rows)
        v = np.empty((16, self.c, length), dtype=flat.dtype)
        for k in range(4):

            def e(j, k=k):  # tile column j of row-stage k: (C, length)
                return rows[k, :, j % 2, j // 2 : j // 2 + length]

            _b_transpose_rows(e, v[4 * k : 4 * k + 4])
        return v

    def output(self, m: np.ndarray, out: np.ndarray) -> None:
        """M (16, C_out, length) -> the output tiles A^T M A written into ``out`` (n, C_out, Ho, Wo)."""
        transform = OUTPUT_TRANSFORM.astype(m.dtype, copy=False)
        tiles = (transform @ m.reshape(16, -1)).reshape(2, 2, self.c_out, self.th, self.n, self.wq)
        for i in range(2):
            for j in range(2):
                target = out[:, :, i::2, j::2]  # output pixel (2t + i, 2q + j) is tile (t, q)'s (i, j)
                target[...] = tiles[i, j, :, : target.shape[2], :, : target.shape[3]].transpose(2, 0, 1, 3)

    def output_adjoint(self, grad_out: np.ndarray) -> np.ndarray:
        """Output gradient (n, C_out, Ho, Wo) -> dM = A dY A^T, (16, C_out, length); zero in the
        dropped tile column and past the image's edge."""
        tiles = np.zeros((2, 2, self.c_out, self.th, self.n, self.wq), dtype=grad_out.dtype)
        for i in range(2):
            for j in range(2):
                source = grad_out[:, :, i::2, j::2]
                tiles[i, j, :, : source.shape[2], :, : source.shape[3]] = source.transpose(1, 2, 0, 3)
        transform = OUTPUT_TRANSFORM.T.astype(grad_out.dtype, copy=False)
        return (transform @ tiles.reshape(4, -1)).reshape(16, self.c_out, self.length)

    def input_adjoint(self, dv: np.ndarray, dx: np.ndarray) -> None:
        """dV (16, C, length) -> the input gradient written into ``dx`` (n, C, H, W): each tile's
        B dV B^T, added onto the phases where tiles overlap, then copied back to the pixels."""
        transform = INPUT_TRANSFORM_ADJOINT.astype(dv.dtype, copy=False)
        dd = (transform @ dv.reshape(16, -1)).reshape(4, 4, self.c, self.length)
        flat = np.zeros((self.c, 2, 2, self.hq * self.row + 1), dtype=dv.dtype)
        for i in range(4):
            for j in range(4):
                start = (i // 2) * self.row + j // 2
                flat[:, i % 2, j % 2, start : start + self.length] += dd[i, j]
        grid = flat[..., :-1].reshape(self.c, 2, 2, self.hq, self.n, self.wq)
        for a, b, (y0, r0, ny), (x0, c0, nx) in self.phase_parts():
            dx[:, :, y0::2, x0::2] = grid[:, a, b, r0 : r0 + ny, :, c0 : c0 + nx].transpose(2, 0, 1, 3)


def _b_transpose_rows(d, out) -> None:
    """out[0..3] = B^T applied along one tile axis whose four entries are ``d(0) .. d(3)``."""
    np.subtract(d(0), d(2), out=out[0])
    np.add(d(1), d(2), out=out[1])
    np.subtract(d(2), d(1), out=out[2])
    np.subtract(d(1), d(3), out=out[3])


def kernel_transform(weight: np.ndarray, dtype) -> np.ndarray:
    """U = G g G^T for every (C_out, C_in) pair: (16, C_out, C_in), computed in float64."""
    c_out, c_in = weight.shape[:2]
    u = np.einsum("ai,ocij,bj->aboc", G, weight.astype(np.float64, copy=False), G)
    return u.reshape(16, c_out, c_in).astype(dtype)


def kernel_transform_adjoint(du: np.ndarray) -> np.ndarray:
    """dU (16, C_out, C_in) -> the weight gradient G^T dU G, (C_out, C_in, 3, 3)."""
    c_out, c_in = du.shape[1:]
    grad = np.einsum("ai,aboc,bj->ocij", G, du.reshape(4, 4, c_out, c_in).astype(np.float64), G)
    return grad.astype(du.dtype)


class Saved:
    """What a forward pass keeps for backward: U (16, C_out, C_in) and V (16, C_in, length)."""

    def __init__(self, u: np.ndarray, v: np.ndarray):
        self.u, self.v = u, v


def conv2d_chunk(x: np.ndarray, u: np.ndarray, padding, out: np.ndarray, bias=None) -> np.ndarray:
    """Forward of n samples into ``out`` (n, C_out, Ho, Wo); returns V for backward.

    The bias is added to M[5] (tile entry (1, 1)) before the output transform: ``A^T e A`` is all
    ones for that entry, so each output gets it once, at 1/16 of the cost of a pass over the output.
    """
    tiles = Tiles(x.shape, u.shape[1], padding)
    v = tiles.input_transform(tiles.phases(x, u.dtype))
    m = np.matmul(u, v)
    if bias is not None:
        m[5] += bias[:, None]
    tiles.output(m, out)
    return v


def conv2d_backward_chunk(grad_out, x, u, padding, v=None, dx=None, du=None) -> np.ndarray:
    """Backward of n samples: adds dU into ``du`` (16, C_out, C_in) when given, writes the input
    gradient into ``dx`` (n, C, H, W) when given, returns the bias gradient (C_out,) (dM[5]'s sum,
    the adjoint of where forward adds the bias). ``v``: the forward's V, rebuilt when None."""
    tiles = Tiles(x.shape, u.shape[1], padding)
    dm = tiles.output_adjoint(grad_out)
    if du is not None:
        if v is None:
            v = tiles.input_transform(tiles.phases(x, u.dtype))
        du += np.matmul(dm, v.transpose(0, 2, 1))
    if dx is not None:
        tiles.input_adjoint(np.matmul(u.transpose(0, 2, 1), dm), dx)
    return dm[5].sum(axis=1)
