"""Skip-gram with negative sampling, one SGD step at a time, on plain arrays.

The step takes the two vector tables and the row indices it touches, not a model object, so
it can be tested against a numerical derivative and reused by any driver (the online item
model, a benchmark, a future compiled kernel).

Direction matters for next-item prediction: for each pair (earlier item -> later item) the
*input* vector of the earlier item is trained to score high against the *output* vector of
the later item. A session's query is then built from input vectors and matched against
output vectors.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
RowArray = npt.NDArray[np.int32]
"""Row numbers in a table as large as the catalogue: int32 (2^31 rows is far beyond any
catalogue one worker holds) where int64 cost 4 MiB more per million items."""


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))).astype(
        np.float32, copy=False)
    return out


def sgns_loss(
    w_in: FloatArray, w_out: FloatArray, inputs: IntArray, targets: IntArray, negatives: IntArray
) -> float:
    """Summed SGNS loss over pairs: -log s(u.v+) - sum log s(-u.v-).

    ``inputs`` and ``targets`` have shape (P,), ``negatives`` (P, N).
    """
    u = w_in[inputs]
    pos = np.einsum("pd,pd->p", u, w_out[targets])
    neg = np.einsum("pd,pnd->pn", u, w_out[negatives])
    return float(-np.log(_sigmoid(pos)).sum() - np.log(_sigmoid(-neg)).sum())


def sgns_step(
    w_in: FloatArray,
    w_out: FloatArray,
    inputs: IntArray,
    targets: IntArray,
    negatives: IntArray,
    lr: float | FloatArray,
) -> float:
    """One SGD step for each (input, target) pair with its row of negatives, in place.

    All pairs' gradients are taken at the current parameters and then applied together
    (``np.add.at`` so repeated rows accumulate), which is what running the pairs one after
    the other does to first order, at a fraction of the Python overhead. ``lr`` may be a
    scalar or one rate per pair. Returns the loss before the step (for monitoring).

    The positive and the negatives of a pair are handled as one row of ``1 + N`` output
    vectors with labels (1, 0, ..., 0), so the whole step is two batched matmuls and two
    scatter-adds.
    """
    p = inputs.shape[0]
    d = w_in.shape[1]
    assert w_in.flags.c_contiguous and w_out.flags.c_contiguous, "scatter_add writes through a flat view"
    rows = np.concatenate([targets.reshape(p, 1), negatives.reshape(p, -1)], axis=1)  # (P, 1+N)
    u = w_in[inputs]  # (P, D)
    v = w_out[rows]  # (P, 1+N, D)
    s = np.matmul(v, u[:, :, None])[:, :, 0]  # (P, 1+N)
    sig = _sigmoid(s)
    loss = float(-np.log(sig[:, 0] + 1e-12).sum() - np.log(1.0 - sig[:, 1:] + 1e-12).sum())
    sig[:, 0] -= 1.0  # dL/ds: sigma(s) - label
    rate = np.asarray(lr, dtype=np.float32)
    g = sig * (rate[:, None] if rate.ndim == 1 else rate)  # (P, 1+N), scaled by lr
    grad_u = np.matmul(g[:, None, :], v)[:, 0, :]  # (P, D)
    scatter_add(w_out, rows.reshape(-1), (g[:, :, None] * -u[:, None, :]).reshape(-1, d))
    scatter_add(w_in, inputs, -grad_u)
    return loss


def scatter_add(table: FloatArray, rows: IntArray, values: FloatArray) -> None:
    """``table[rows] += values`` where repeated rows accumulate.

    Same result as ``np.add.at(table, rows, values)``, but through the flat 1-D form, which
    numpy runs several times faster than the row-wise one.
    """
    d = table.shape[1]
    flat_idx = (rows[:, None] * d + np.arange(d)).reshape(-1)
    np.add.at(table.reshape(-1), flat_idx, values.reshape(-1))


def sgns_gradients(
    w_in: FloatArray, w_out: FloatArray, inputs: IntArray, targets: IntArray, negatives: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Analytic gradients of ``sgns_loss`` with respect to both full tables (for tests)."""
    gi = np.zeros_like(w_in, dtype=np.float64)
    go = np.zeros_like(w_out, dtype=np.float64)
    u = w_in[inputs].astype(np.float64)
    v_pos = w_out[targets].astype(np.float64)
    v_neg = w_out[negatives].astype(np.float64)
    sig_pos = 1.0 / (1.0 + np.exp(-np.einsum("pd,pd->p", u, v_pos)))
    sig_neg = 1.0 / (1.0 + np.exp(-np.einsum("pd,pnd->pn", u, v_neg)))
    g_pos = sig_pos - 1.0
    np.add.at(gi, inputs, g_pos[:, None] * v_pos + np.einsum("pn,pnd->pd", sig_neg, v_neg))
    np.add.at(go, targets, g_pos[:, None] * u)
    np.add.at(go, negatives.reshape(-1), (sig_neg[:, :, None] * u[:, None, :]).reshape(-1, u.shape[1]))
    return gi.astype(np.float32), go.astype(np.float32)
