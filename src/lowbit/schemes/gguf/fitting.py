"""The k-quant scale-fitting routines of ggml-quants.c, vectorized over groups.

Each function takes a ``[G, n]`` float32 array (G independent groups of n
values: sub-blocks of weights, or a super-block's sub-scales) and runs ggml's
per-group algorithm on all G groups at once. Python loops only run over the
search steps (≤ 37) or, for the coordinate-descent sweeps, over the ≤ 16
positions of a group. Arithmetic follows the C expression order exactly
(see ``_numeric``), so results are bit-identical to libggml.

Codes are returned as int64 arrays holding the values C stores in its
``L`` buffers (offsets included, e.g. ``l + nmax`` for make_qx_quants).

Internally the data is transposed to group-major ``[n, G]`` so that the
sequential float32 sums are n contiguous vector adds (see ``seq_sum_rows``).
"""

from __future__ import annotations

import numpy as np

from ._numeric import GROUP_MAX_EPS, F, c_max_macro, c_scan_extremes, first_argmax_abs, nearest_int, seq_sum_rows, seq_sum_rows_from_first


def _t(a: np.ndarray) -> np.ndarray:
    """[G, n] → contiguous float32 [n, G]."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).T)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 a/b with IEEE inf/nan allowed (masked out by the callers)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (a / b).astype(np.float32)


def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric fit with a signed scale: ``x ≈ scale·(L − nmax)`` (rmse_type 1).

    Weights are ``qw`` or, when None, x². Tries iscale = −(nmax + 0.1·is)/max
    for is = −9…9 and keeps the least-squares scale that maximises Σwxl²/Σwl².

    Args:
        x: float32 [G, n] values.
        nmax: codes span −nmax … nmax−1 before the +nmax offset.
        qw: float32 [G, n] error weights, or None for x².
    Returns:
        (scale float32 [G], L int64 [G, n] in 0 … 2·nmax−1; all-zero groups give 0, 0).
    """
    xt = _t(x)
    wt = xt * xt if qw is None else _t(qw)
    wx = wt * xt
    mx = first_argmax_abs(np.asarray(x, dtype=np.float32))
    zero = np.abs(mx) < GROUP_MAX_EPS

    def trial(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        l = np.clip(nearest_int(iscale * xt), -nmax, nmax - 1).astype(np.float32)
        return l, seq_sum_rows(wx * l), seq_sum_rows((wt * l) * l)

    l, sumlx, suml2 = trial(_div(F(-nmax), mx))
    L = l
    scale = np.where(suml2 != 0, _div(sumlx, suml2), F(0.0)).astype(np.float32)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        l, sumlx, suml2 = trial(_div(-(F(0.1) * F(step) + F(nmax)), mx))
        take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        L = np.where(take, l, L)
        scale = np.where(take, _div(sumlx, suml2), scale)
        best = np.where(take, scale * sumlx, best)
    codes = np.where(zero[:, None], 0, L.T.astype(np.int64) + nmax)
    return np.where(zero, F(0.0), scale).astype(np.float32), codes


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric fit with x² weights refined by coordinate descent (do_rmse=true).

    Returns (scale float32 [G], L int64 [G, n] in 0 … 2·nmax−1).
    """
    xt = _t(x)
    w = xt * xt
    wx = w * xt
    mx = first_argmax_abs(np.asarray(x, dtype=np.float32))
    zero = np.abs(mx) < GROUP_MAX_EPS
    lf = np.clip(nearest_int(_div(F(-nmax), mx) * xt), -nmax, nmax - 1).astype(np.float32)
    sumlx = seq_sum_rows(wx * lf)
    suml2 = seq_sum_rows((w * lf) * lf)
    _coordinate_descent(xt, w, wx, lf, sumlx, suml2, -nmax, nmax - 1, require_sl2=False)
    scale = np.where(suml2 > 0, _div(sumlx, suml2), F(0.0))
    codes = np.where(zero[:, None], 0, lf.T.astype(np.int64) + nmax)
    return np.where(zero, F(0.0), scale).astype(np.float32), codes


def _coordinate_descent(x: np.ndarray, w: np.ndarray, wx: np.ndarray, L: np.ndarray,
                        sumlx: np.ndarray, suml2: np.ndarray, lo: int | None, hi: int,
                        require_sl2: bool) -> None:
    """ggml's 5-sweep per-element refinement, updating L, sumlx, suml2 in place.

    All arrays are group-major: x, w, wx, L are [n, G]; sumlx, suml2 are [G].
    A sweep that changes nothing leaves the state as it found it, so running
    all five sweeps unconditionally equals C's early ``break``.

    ``L`` holds the stored codes as float32; ``lo`` None means no lower clamp
    and a uint8 ``L`` buffer (make_qp_quants): the comparison and the sums use
    the int candidate, the buffer keeps it modulo 256. ``require_sl2`` adds
    make_qp_quants' ``sl2 > 0`` guard before the candidate is computed
    (make_q3_quants checks it afterwards).
    """
    for _ in range(5):
        for i in range(x.shape[0]):
            wi, xi, wxi, li = w[i], x[i], wx[i], L[i]
            slx = sumlx - wxi * li
            sl2 = suml2 - (wi * li) * li
            ok = slx > 0
            if require_sl2:
                ok &= sl2 > 0
            cand = nearest_int(_div(xi * sl2, slx))
            cand = np.minimum(cand, hi) if lo is None else np.clip(cand, lo, hi)
            newl = cand.astype(np.float32)
            ok &= newl != li
            slx = slx + wxi * newl
            sl2 = sl2 + (wi * newl) * newl
            if not require_sl2:
                ok &= sl2 > 0
            ok &= (slx * slx) * suml2 > (sumlx * sumlx) * sl2
            stored = newl if lo is not None else (cand & 0xFF).astype(np.float32)
            L[i] = np.where(ok, stored, li)
            sumlx[...] = np.where(ok, slx, sumlx)
            suml2[...] = np.where(ok, sl2, suml2)


def make_qkx_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                    nstep: int, use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine fit ``x ≈ scale·L − the_min`` (make_qkx2_quants / make_qkx3_quants).

    The two C functions differ only in what they do with NULL weights, which
    no caller here uses, so one implementation serves both. On acceptance the
    running ``min`` is overwritten and reused by later steps, as in C.

    Args:
        x, w: float32 [G, n] values and error weights.
        nmax: largest code (3, 15 or 31).
        rmin, rdelta, nstep: search iscale = (rmin + rdelta·is + nmax)/(max − min), is = 0…nstep.
        use_mad: score Σw|e| instead of Σw·e².
    Returns:
        (scale float32 [G], the_min float32 [G] (≥ 0 normally), L int64 [G, n] in 0 … nmax).
    """
    xt, wt = _t(x), _t(w)
    mn, mx = c_scan_extremes(xt.T, first=True)
    sum_w = seq_sum_rows_from_first(wt)
    sum_x = seq_sum_rows_from_first(wt * xt)
    mn = np.where(mn > 0, F(0.0), mn).astype(np.float32)
    flat = mx == mn

    def err(scale: np.ndarray, mins: np.ndarray, L: np.ndarray) -> np.ndarray:
        diff = (scale * L + mins) - xt
        diff = np.abs(diff) if use_mad else diff * diff
        return seq_sum_rows(wt * diff)

    def codes(iscale: np.ndarray, mins: np.ndarray) -> np.ndarray:
        return np.clip(nearest_int(iscale * (xt - mins)), 0, nmax).astype(np.float32)

    iscale = _div(F(nmax), mx - mn)
    scale = _div(F(1.0), iscale)
    L = codes(iscale, mn)
    best = err(scale, mn, L)
    for step in range(nstep + 1):
        iscale = _div(F(rmin) + F(rdelta) * F(step) + F(nmax), mx - mn)
        la = codes(iscale, mn)
        wl = wt * la
        sum_l = seq_sum_rows(wl)
        sum_l2 = seq_sum_rows(wl * la)
        sum_xl = seq_sum_rows(wl * xt)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = _div(sum_w * sum_xl - sum_x * sum_l, D)
        this_min = _div(sum_l2 * sum_x - sum_l * sum_xl, D)
        pos = this_min > 0
        this_min = np.where(pos, F(0.0), this_min).astype(np.float32)
        this_scale = np.where(pos, _div(sum_xl, sum_l2), this_scale).astype(np.float32)
        cur = err(this_scale, this_min, la)
        take = (D > 0) & (cur < best) & ~flat
        L = np.where(take, la, L)
        best = np.where(take, cur, best)
        scale = np.where(take, this_scale, scale)
        mn = np.where(take, this_min, mn)
    L = np.where(flat, F(0.0), L)
    scale = np.where(flat, F(0.0), scale).astype(np.float32)
    return scale, (-mn).astype(np.float32), L.T.astype(np.int64)


def make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offset-free fit of non-negative values (sub-scales or sub-mins): ``x ≈ scale·L``.

    Tries iscale = (nmax + 0.1·is)/max for is = −4…4 by weighted MSE, then
    refines with coordinate descent. C keeps L in a uint8 buffer, so a
    negative code (possible only for a negative input) wraps to 256 + l; that
    is emulated.

    Returns (scale float32 [G], L int64 [G, n] as stored uint8 values).
    """
    mx = c_max_macro(np.asarray(x, dtype=np.float32))
    xt, w = _t(x), _t(qw)
    zero = mx < GROUP_MAX_EPS
    iscale = _div(F(nmax), mx)
    l0 = (nearest_int(iscale * xt) & 0xFF).astype(np.float32)  # uint8 L[]
    scale = _div(F(1.0), iscale)
    diff = xt - scale * l0
    best = seq_sum_rows((w * diff) * diff)
    for step in range(-4, 5):
        if step == 0:
            continue
        isc = _div(F(0.1) * F(step) + F(nmax), mx)
        sc = _div(F(1.0), isc)
        l = np.minimum(nearest_int(isc * xt), nmax).astype(np.float32)
        diff = xt - sc * l
        mse = seq_sum_rows((w * diff) * diff)
        take = mse < best
        best = np.where(take, mse, best)
        iscale = np.where(take, isc, iscale)
    l = np.minimum(nearest_int(iscale * xt), nmax)
    wx = w * xt
    lf = l.astype(np.float32)
    sumlx = seq_sum_rows(wx * lf)
    suml2 = seq_sum_rows((w * lf) * lf)
    stored = (l & 0xFF).astype(np.float32)  # uint8 L[] buffer
    _coordinate_descent(xt, w, wx, stored, sumlx, suml2, None, nmax, require_sl2=True)
    scale = np.where(suml2 > 0, _div(sumlx, suml2), F(0.0))
    codes = np.where(zero[:, None], 0, stored.T.astype(np.int64))
    return np.where(zero, F(0.0), scale).astype(np.float32), codes
