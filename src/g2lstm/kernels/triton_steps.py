"""Triton step kernels of the CUDA loop (see :mod:`g2lstm.kernels.triton_loop`, which launches them).

One launch computes one time step of one layer direction: ``forward_step`` the recurrent product
``h_{t-1} W_hh^T`` for the four gate blocks of a tile of hidden units, with the gate noise, the
nonlinearities and the cell update fused behind it; ``backward_step`` the product ``dG_{t+1} W_hh`` that
carries the hidden-state gradient back one step, with the local derivatives of step ``t`` fused behind it.
A program owns ``BLOCK_B`` rows and ``BLOCK_H`` hidden units of all four gates, so everything after the
product is element-wise within the program; programs only meet through the previous launch's output.

``settings`` holds ``(scale, noise_p, noise_eps, 1 + 2 noise_eps)`` in the computation's dtype (a tensor,
not scalar arguments, so that float64 runs keep them in float64 under the interpreter too). Rows are packed
and time-major as in :func:`g2lstm.kernels.lstm_sequence`. A step reads the previous
state of row ``b`` from the previous processed step's rows when ``b < prev_size``, else from the initial
state (a sequence of a packed batch that starts at this step in the reverse direction). Row ``b`` of a step
is final when ``b >= next_size``; the forward kernel then writes it to ``h_n`` / ``c_n``.

The gate noise is made in the kernel, from the same Philox4x32-10 bits as
:func:`g2lstm.functional.gate_bits` (``tl.philox`` is that generator), so it never goes through memory.

This module imports Triton and is only imported by the CUDA path (or by tests under ``TRITON_INTERPRET=1``).
"""

import triton
import triton.language as tl

__all__ = ["backward_step", "forward_step"]


@triton.jit
def _previous(rows, first, prev_row, prev_size, b, cols, hidden, mask):
    """The ``(rows b, columns cols)`` tile of the previous state: the previous step's rows where it ran
    row ``b`` (``b < prev_size``), else the initial state ``first``."""
    carried = (b < prev_size)[:, None]
    from_rows = tl.load(
        rows + (prev_row + b).to(tl.int64)[:, None] * hidden + cols[None, :], mask=mask & carried, other=0.0
    )
    from_first = tl.load(
        first + b.to(tl.int64)[:, None] * hidden + cols[None, :], mask=mask & ~carried, other=0.0
    )
    return tl.where(carried, from_rows, from_first)


@triton.jit
def _tanh(x):
    return 2 * tl.sigmoid(2 * x) - 1


@triton.jit
def _gate_noise(
    seed, rows, gate, units, noise_p, noise_eps, noise_top, WIDE: tl.constexpr, PERTURB_ALL: tl.constexpr
):
    """Noise of one gate (0 input, 1 forget) for ``rows x units``, as
    :func:`g2lstm.functional.noise_from_bits` makes it of :func:`g2lstm.functional.gate_bits`; ``noise_top``
    is ``1 + 2 noise_eps``."""
    shape_rows = rows.to(tl.uint32)[:, None]
    zero = tl.zeros_like(shape_rows) + tl.zeros_like(units.to(tl.uint32))[None, :]
    if WIDE:  # float64: two words per element, 53 bits
        counter = (units // 2).to(tl.uint32)[None, :] + zero
        x0, x1, x2, x3 = tl.philox(seed, counter, shape_rows + zero, zero + gate, zero, 10)
        first = (units % 2 == 0)[None, :]
        high = tl.where(first, x0, x2) & 0x1FFFFF
        low = tl.where(first, x1, x3)
        uniform = ((high.to(tl.uint64) << 32) | low.to(tl.uint64)).to(tl.float64) * (2.0**-53)
    else:  # float32: one word per element, 24 bits
        counter = (units // 4).to(tl.uint32)[None, :] + zero
        x0, x1, x2, x3 = tl.philox(seed, counter, shape_rows + zero, zero + gate, zero, 10)
        word = (units % 4)[None, :]
        bits = tl.where(word == 0, x0, tl.where(word == 1, x1, tl.where(word == 2, x2, x3)))
        uniform = (bits & 0xFFFFFF).to(tl.float32) * (2.0**-24)
    if PERTURB_ALL:
        shifted = uniform + noise_eps
        noise = tl.log(shifted / (noise_top - shifted))
    else:  # perturbed where uniform < noise_p, with uniform / noise_p (0.5 elsewhere keeps the log finite)
        keep = uniform < noise_p
        shifted = tl.where(keep, uniform / noise_p, 0.5) + noise_eps
        noise = tl.where(keep, tl.log(shifted / (noise_top - shifted)), 0.0)
    return noise


@triton.jit(do_not_specialize=["row", "size", "prev_row", "prev_size", "next_size", "seed"])
def forward_step(
    gate_inputs, weight_hh, h0, c0, output, cells, gates, h_prevs, h_n, c_n, settings, row, size, prev_row,
    prev_size, next_size, seed, HIDDEN: tl.constexpr, HARD: tl.constexpr, NOISE: tl.constexpr,
    PERTURB_ALL: tl.constexpr, WIDE: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr
):
    """One forward step: rows ``[row, row + size)`` of ``output``, ``cells``, ``gates`` and ``h_prevs``
    (the previous hidden state each row read), and the final states of rows with ``b >= next_size``."""
    dtype = output.dtype.element_ty
    units = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    active = b < size
    unit_ok = units < HIDDEN
    tile = active[:, None] & unit_ok[None, :]

    acc_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=dtype)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=dtype)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), dtype=dtype)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), dtype=dtype)
    for start in range(0, HIDDEN, BLOCK_K):
        k = start + tl.arange(0, BLOCK_K)
        k_ok = k < HIDDEN
        h = _previous(output, h0, prev_row, prev_size, b, k, HIDDEN, active[:, None] & k_ok[None, :])
        w = weight_hh + units.to(tl.int64)[None, :] * HIDDEN + k[:, None]  # W_hh[gate unit, k], transposed
        w_ok = k_ok[:, None] & unit_ok[None, :]
        acc_i += tl.dot(h, tl.load(w, mask=w_ok, other=0.0), input_precision=PRECISION)
        acc_f += tl.dot(h, tl.load(w + HIDDEN * HIDDEN, mask=w_ok, other=0.0), input_precision=PRECISION)
        acc_g += tl.dot(h, tl.load(w + 2 * HIDDEN * HIDDEN, mask=w_ok, other=0.0), input_precision=PRECISION)
        acc_o += tl.dot(h, tl.load(w + 3 * HIDDEN * HIDDEN, mask=w_ok, other=0.0), input_precision=PRECISION)

    rows = row + b
    gate_at = rows.to(tl.int64)[:, None] * (4 * HIDDEN) + units[None, :]
    pre_i = acc_i + tl.load(gate_inputs + gate_at, mask=tile, other=0.0)
    pre_f = acc_f + tl.load(gate_inputs + gate_at + HIDDEN, mask=tile, other=0.0)
    pre_g = acc_g + tl.load(gate_inputs + gate_at + 2 * HIDDEN, mask=tile, other=0.0)
    pre_o = acc_o + tl.load(gate_inputs + gate_at + 3 * HIDDEN, mask=tile, other=0.0)
    if NOISE:
        noise_p = tl.load(settings + 1)
        noise_eps = tl.load(settings + 2)
        noise_top = tl.load(settings + 3)
        pre_i += _gate_noise(seed, rows, 0, units, noise_p, noise_eps, noise_top, WIDE, PERTURB_ALL)
        pre_f += _gate_noise(seed, rows, 1, units, noise_p, noise_eps, noise_top, WIDE, PERTURB_ALL)
    if HARD:
        i = (pre_i >= 0).to(dtype)
        f = (pre_f >= 0).to(dtype)
    else:
        scale = tl.load(settings)
        i = tl.sigmoid(pre_i * scale)
        f = tl.sigmoid(pre_f * scale)
    g = _tanh(pre_g)
    o = tl.sigmoid(pre_o)
    c = f * _previous(cells, c0, prev_row, prev_size, b, units, HIDDEN, tile) + i * g
    h = o * _tanh(c)

    state_at = rows.to(tl.int64)[:, None] * HIDDEN + units[None, :]
    tl.store(
        h_prevs + state_at, _previous(output, h0, prev_row, prev_size, b, units, HIDDEN, tile), mask=tile
    )
    tl.store(output + state_at, h, mask=tile)
    tl.store(cells + state_at, c, mask=tile)
    tl.store(gates + gate_at, i, mask=tile)
    tl.store(gates + gate_at + HIDDEN, f, mask=tile)
    tl.store(gates + gate_at + 2 * HIDDEN, g, mask=tile)
    tl.store(gates + gate_at + 3 * HIDDEN, o, mask=tile)
    final_at = b.to(tl.int64)[:, None] * HIDDEN + units[None, :]
    final = tile & (b >= next_size)[:, None]
    tl.store(h_n + final_at, h, mask=final)
    tl.store(c_n + final_at, c, mask=final)


@triton.jit(do_not_specialize=["row", "size", "prev_row", "prev_size", "next_row", "next_size"])
def backward_step(
    grad_gates, weight_hh, gates, cells, c0, grad_output, grad_h_n, grad_c_n, dc_carry, grad_h0, grad_c0,
    settings, row, size, prev_row, prev_size, next_row, next_size, HIDDEN: tl.constexpr, HARD: tl.constexpr,
    GRAD_OUTPUT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr
):
    """One backward step: the pre-activation gradients of rows ``[row, row + size)`` into ``grad_gates``.

    The HIDDEN-state gradient arrives from the next processed step's rows of ``grad_gates`` (rows
    ``b < next_size``) or from ``grad_h_n``; the cell-state gradient from ``dc_carry`` (``(B, H)``, holding
    ``dc * f`` of the next step) or from ``grad_c_n``. Rows with ``size <= b < next_size`` started from the
    initial state at the next step: their gradients are written to ``grad_h0`` / ``grad_c0`` (a last launch
    with ``size = 0`` does so for the rows of the first processed step).
    """
    dtype = gates.dtype.element_ty
    units = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    unit_ok = units < HIDDEN
    from_next = b < next_size

    carried_h = tl.zeros((BLOCK_B, BLOCK_H), dtype=dtype)
    for start in range(0, 4 * HIDDEN, BLOCK_K):
        n = start + tl.arange(0, BLOCK_K)
        n_ok = n < 4 * HIDDEN
        d = tl.load(
            grad_gates + (next_row + b).to(tl.int64)[:, None] * (4 * HIDDEN) + n[None, :],
            mask=from_next[:, None] & n_ok[None, :],
            other=0.0,
        )
        w = tl.load(
            weight_hh + n.to(tl.int64)[:, None] * HIDDEN + units[None, :],
            mask=n_ok[:, None] & unit_ok[None, :],
            other=0.0,
        )
        carried_h += tl.dot(d, w, input_precision=PRECISION)

    state_at = b.to(tl.int64)[:, None] * HIDDEN + units[None, :]
    carried_c = tl.load(dc_carry + state_at, mask=from_next[:, None] & unit_ok[None, :], other=0.0)
    starts = (from_next & (b >= size))[:, None] & unit_ok[None, :]
    tl.store(grad_h0 + state_at, carried_h, mask=starts)
    tl.store(grad_c0 + state_at, carried_c, mask=starts)

    tile = (b < size)[:, None] & unit_ok[None, :]
    dh = tl.where(from_next[:, None], carried_h, tl.load(grad_h_n + state_at, mask=tile, other=0.0))
    dc = tl.where(from_next[:, None], carried_c, tl.load(grad_c_n + state_at, mask=tile, other=0.0))
    rows = (row + b).to(tl.int64)[:, None]
    if GRAD_OUTPUT:
        dh += tl.load(grad_output + rows * HIDDEN + units[None, :], mask=tile, other=0.0)
    gate_at = rows * (4 * HIDDEN) + units[None, :]
    i = tl.load(gates + gate_at, mask=tile, other=0.0)
    f = tl.load(gates + gate_at + HIDDEN, mask=tile, other=0.0)
    g = tl.load(gates + gate_at + 2 * HIDDEN, mask=tile, other=0.0)
    o = tl.load(gates + gate_at + 3 * HIDDEN, mask=tile, other=0.0)
    tanh_c = _tanh(tl.load(cells + rows * HIDDEN + units[None, :], mask=tile, other=0.0))
    c_prev = _previous(cells, c0, prev_row, prev_size, b, units, HIDDEN, tile)

    dc += dh * (o * (1 - tanh_c * tanh_c))
    if HARD:
        d_i = tl.zeros((BLOCK_B, BLOCK_H), dtype=dtype)
        d_f = tl.zeros((BLOCK_B, BLOCK_H), dtype=dtype)
    else:
        scale = tl.load(settings)
        d_i = i * (1 - i) * scale * g * dc
        d_f = f * (1 - f) * scale * c_prev * dc
    tl.store(grad_gates + gate_at, d_i, mask=tile)
    tl.store(grad_gates + gate_at + HIDDEN, d_f, mask=tile)
    tl.store(grad_gates + gate_at + 2 * HIDDEN, (1 - g * g) * i * dc, mask=tile)
    tl.store(grad_gates + gate_at + 3 * HIDDEN, o * (1 - o) * tanh_c * dh, mask=tile)
    tl.store(dc_carry + state_at, dc * f, mask=tile)
