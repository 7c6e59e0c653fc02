"""The GPTQ solve for one weight matrix: Hessian-guided error feedback, column by column.

Follows ``fasterquant`` of IST-DASLab/gptq (Frantar et al., ICLR 2023), see
``shared/reference/methods-and-formats.md`` §1:

1. dead inputs (``H_ii = 0``): ``H_ii ← 1`` and the column's weights ← 0;
2. dampening ``λ = damp · mean(diag H)``; if Cholesky fails the damp grows
   ×10 and the solve retries (logged);
3. ``U`` = upper Cholesky factor of ``H⁻¹``;
4. columns in blocks of ``block``: quantize column ``j``, spread its error
   ``(w_j − q_j)/U_jj`` over the block's remaining columns, then one GEMM
   updates every later column (lazy batch updates);
5. grid parameters are fitted through the scheme at the first column of each
   group, from the already error-compensated weights; with ``static_groups``
   every group is fitted up front from the original weights (optionally
   weighted by an importance vector), which grids that cannot be fitted one
   group at a time (GGUF k-quants: ``Scheme.needs_static_groups``) always get;
6. act-order processes columns by descending ``diag H``; without static
   groups the groups follow the processing order and ``g_idx[c]`` records the
   group of input column ``c`` (``position of c in the order // G``).

Everything runs through the scheme's column-wise interface
(:meth:`~lowbit.schemes.base.Scheme.column_group_size`, ``fit`` /
``fit_static``, ``column_grid``, ``quantize_with``, ``assemble``), so any grid
that offers it works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme
from lowbit.utils.progress import warn

MAX_DAMP_RETRIES = 4


@dataclass(frozen=True)
class GPTQConfig:
    """Options of one GPTQ solve.

    Attributes:
        damp: dampening as a fraction of the mean Hessian diagonal.
        block: columns per lazy-batch block.
        act_order: process columns by descending Hessian diagonal.
        static_groups: fit every group's grid from the original weights up front
            (forced for schemes that need it, see :func:`uses_static_groups`).
    """

    damp: float = 0.01
    block: int = 128
    act_order: bool = False
    static_groups: bool = False


@dataclass
class SolveResult:
    """One solve's outputs.

    Attributes:
        q: the representation (rows of every matrix solved together, split later).
        loss: GPTQ's proxy loss ``Σ (w − q)² / (2 U_jj²)``.
        damp: the dampening that succeeded.
    """

    q: QuantizedTensor
    loss: float
    damp: float


def inverse_hessian_factor(h: torch.Tensor, damp: float, name: str) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor ``U`` of ``(H + λI)⁻¹`` (``H⁻¹ = UᵀU``), and the damp used.

    Computed in float64 (cheap at these sizes, and it removes most failures);
    retries with 10× the damp when the factorisation fails.

    One factorisation: with ``J`` the order-reversing permutation and
    ``J H J = L Lᵀ``, ``H⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J)`` and ``J L⁻¹ J`` is upper
    triangular with a positive diagonal — the Cholesky factor of ``H⁻¹``,
    without forming ``H⁻¹`` and factorising it again (25% faster).
    """
    h64 = h.double()
    mean_diag = float(torch.diag(h64).mean())
    eye = torch.eye(h64.shape[0], dtype=torch.float64, device=h64.device)
    for attempt in range(MAX_DAMP_RETRIES + 1):
        low, info = torch.linalg.cholesky_ex((h64 + eye * (damp * mean_diag)).flip(0, 1))
        if int(info) == 0:
            upper = torch.linalg.solve_triangular(low, eye, upper=False).flip(0, 1)
            if bool(torch.isfinite(upper).all()):
                return upper.float(), damp
        if attempt < MAX_DAMP_RETRIES:
            warn(f"gptq: Hessian of '{name}' is not positive definite at damp={damp:g}; retrying at {damp * 10:g}")
            damp *= 10
    raise LowbitError(f"gptq: Hessian of '{name}' stays singular up to damp={damp:g}; "
                      "give more calibration text or a larger +damp")


def uses_static_groups(scheme: Scheme, cfg: GPTQConfig) -> bool:
    """Whether a solve on ``scheme`` fits every group up front: when asked, or when the grid needs it.

    Raises :class:`LowbitError` for act-order with groups that follow the
    processing order on a scheme that cannot store per-column group indices.
    """
    static = cfg.static_groups or scheme.needs_static_groups
    if cfg.act_order and not static and not scheme.supports_g_idx:
        raise LowbitError(f"gptq +act without +static needs per-column group indices, which {scheme.spec()} "
                          "cannot store; add +static")
    return static


@contextmanager
def one_thread() -> Iterator[None]:
    """Run small latency-bound tensor ops on one CPU thread.

    The column loop issues thousands of tiny ops; with several threads each
    one pays a fork/join, which costs 8x here on a busy 2-core machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gptq_solve(w: torch.Tensor, h: torch.Tensor, scheme: Scheme, cfg: GPTQConfig, name: str,
               importance: torch.Tensor | None = None) -> SolveResult:
    """Quantize ``w`` ``[O, I]`` minimising ``‖(W − Ŵ)X‖²`` for inputs with ``H = E[x xᵀ]`` ``[I, I]``.

    ``importance`` (``[I]``, e.g. a llama.cpp imatrix) weights the up-front
    fit of static groups (:meth:`~lowbit.schemes.base.Scheme.fit_static`);
    groups fitted during the solve take none.
    """
    if not bool(torch.isfinite(h).all()):
        raise LowbitError(f"gptq: the calibration inputs of '{name}' contain NaN/Inf; stopping at this layer")
    w = w.detach().clone().float()
    h = h.detach().clone().float()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    g = scheme.column_group_size(cols)
    static_groups = uses_static_groups(scheme, cfg)
    if importance is not None and not static_groups:
        raise LowbitError(f"gptq: an importance vector only weights static-group fits, and '{name}' "
                          f"({scheme.spec()}) fits its groups during the solve")
    static = scheme.fit_static(w, importance) if static_groups else None
    perm = torch.argsort(torch.diag(h), descending=True, stable=True) if cfg.act_order else None
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    u, damp = inverse_hessian_factor(h, cfg.damp, name)
    # Transposed working copy ([columns, rows]): a column is contiguous, so the
    # per-column error spread (an outer-product update, GPTQ's hot loop) runs
    # over contiguous rows — 4.5x faster than on a strided [rows, columns] view.
    wt = w.t().contiguous()
    # The column loop issues thousands of tiny ops: one thread (see one_thread);
    # the Cholesky factorisations above keep every thread.
    with one_thread() if w.device.type == "cpu" else nullcontext():
        codes_t, losses, fitted = _error_feedback(wt, u, scheme, g, cfg.block, static, perm)
    if not bool(torch.isfinite(wt).all()):
        raise LowbitError(f"gptq: NaN/Inf appeared while quantizing '{name}'; stopping at this layer")
    codes = codes_t.t()
    g_idx = None
    if perm is not None:
        inv = torch.argsort(perm)
        codes = codes[:, inv]
        if static is None:
            g_idx = (torch.arange(cols, device=w.device) // g)[inv].to(torch.int32)
    codes = codes.contiguous()
    q = scheme.assemble((rows, cols), codes, static if static is not None else fitted)
    if g_idx is not None:
        q.params["g_idx"] = g_idx
    q.meta.update({"method": "gptq", "act_order": cfg.act_order, "static_groups": static_groups,
                   "damp": damp})
    return SolveResult(q, float(losses.sum()), damp)


def _error_feedback(wt: torch.Tensor, u: torch.Tensor, scheme: Scheme, g: int, block: int,
                    static: list[dict[str, torch.Tensor]] | None,
                    perm: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """GPTQ's column loop on the transposed weights ``wt`` ``[I, O]`` (updated in place).

    Returns the codes ``[I, O]``, the per-row proxy loss and the grids fitted
    during the solve (empty with static groups).
    """
    cols, rows = wt.shape
    codes_t = torch.zeros(cols, rows, dtype=torch.uint8, device=wt.device)
    losses = torch.zeros(rows, device=wt.device)
    fitted: list[dict[str, torch.Tensor]] = []
    varies = scheme.column_grid_varies
    grid: dict[str, torch.Tensor] = {}
    grid_of = -1  # the group whose grid ``grid`` is, when it does not vary by column
    # Act-order visits static groups in scattered order: convert each group's grid once.
    static_grids = [scheme.column_grid(p, 0) for p in static] if static is not None and not varies else None
    order = perm.tolist() if perm is not None else None  # Python ints: no tensor indexing per column
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        w1 = wt[b0:b1].clone()
        err = torch.empty_like(w1)
        u1 = u[b0:b1, b0:b1]
        diag = torch.diag(u1).tolist()  # Python floats: no tensor indexing per column
        for i in range(b1 - b0):
            col = b0 + i
            if static is not None:
                at = order[col] if order is not None else col  # the column's place in the natural order
                if static_grids is not None:
                    grid = static_grids[at // g]
                else:
                    grid = scheme.column_grid(static[at // g], at % g)
            else:
                if col % g == 0:
                    end = min(col + g, cols)
                    # The group's weights as compensated so far: this block's part
                    # (w1) is current, later blocks' part has every earlier update.
                    span = torch.cat([w1[i:], wt[b1:end]], dim=0)[: end - col]
                    fitted.append(scheme.fit(span.t().contiguous()))
                    grid_of = -1
                if varies or grid_of == -1:
                    grid, grid_of = scheme.column_grid(fitted[-1], col % g), len(fitted) - 1
            wc = w1[i]
            q = scheme.quantize_column_(wc, grid, codes_t[col])
            e = err[i]
            torch.sub(wc, q, out=e).div_(diag[i])
            if i + 1 < b1 - b0:  # spread the error over the block's later columns
                w1[i + 1 :].addr_(u1[i, i + 1 :], e, alpha=-1.0)
        losses += err.square().sum(0) / 2
        if b1 < cols:  # the lazy batch update of every later column
            wt[b1:].addmm_(u[b0:b1, b1:].t(), err, alpha=-1.0)
    return codes_t, losses, fitted


def split_rows(q: QuantizedTensor, sizes: list[int]) -> list[QuantizedTensor]:
    """Split a representation of stacked matrices (rows ``sizes``) back into one per matrix.

    The scheme knows its parameters' layout (:meth:`Scheme.split_rows`): per
    row for channel and group grids, per flattened block for bitsandbytes'.
    """
    from lowbit.schemes import get_scheme

    return get_scheme(q.scheme).split_rows(q, sizes)
