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


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))
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
    """
    u = w_in[inputs]  # (P, D)
    v_pos = w_out[targets]  # (P, D)
    v_neg = w_out[negatives]  # (P, N, D)
    s_pos = np.einsum("pd,pd->p", u, v_pos)
    s_neg = np.einsum("pd,pnd->pn", u, v_neg)
    sig_pos = _sigmoid(s_pos)
    sig_neg = _sigmoid(s_neg)
    loss = float(-np.log(sig_pos + 1e-12).sum() - np.log(1.0 - sig_neg + 1e-12).sum())
    rate = np.asarray(lr, dtype=np.float32)
    if rate.ndim == 1:
        rate = rate[:, None]
    g_pos = ((sig_pos - 1.0)[:, None] * rate).astype(np.float32)  # dL/ds_pos, scaled by lr
    g_neg = (sig_neg * (rate if rate.ndim == 0 else rate)).astype(np.float32)  # (P, N)
    grad_u = g_pos * v_pos + np.einsum("pn,pnd->pd", g_neg, v_neg)
    np.add.at(w_out, targets, -g_pos * u)
    np.add.at(w_out, negatives.reshape(-1), -(g_neg[:, :, None] * u[:, None, :]).reshape(-1, u.shape[1]))
    np.add.at(w_in, inputs, -grad_u)
    return loss


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
