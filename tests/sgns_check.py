"""Shared by the SGNS tests (numpy reference and compiled kernels): random tables and the
central-difference gradient of ``sgns_loss`` they are both checked against."""

from __future__ import annotations

import numpy as np

from models.sgns import FloatArray, IntArray, sgns_loss


def tables(seed: int = 0, n: int = 12, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w_in = (rng.normal(size=(n, d)) * 0.5).astype(np.float32)
    return w_in, (rng.normal(size=(n, d)) * 0.5).astype(np.float32)


def numeric_grad(
    w_in: FloatArray,
    w_out: FloatArray,
    inputs: IntArray,
    targets: IntArray,
    negatives: IntArray,
    which: str,
    eps: float = 1e-3,
) -> np.ndarray:
    table = w_in if which == "in" else w_out
    grad = np.zeros(table.shape, dtype=np.float64)
    for idx in np.ndindex(table.shape):
        keep = table[idx]
        table[idx] = keep + eps
        up = sgns_loss(w_in, w_out, inputs, targets, negatives)
        table[idx] = keep - eps
        down = sgns_loss(w_in, w_out, inputs, targets, negatives)
        table[idx] = keep
        grad[idx] = (up - down) / (2 * eps)
    return grad
