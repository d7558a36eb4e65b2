"""Pictures for reports (matplotlib, from the optional ``[bench]`` extra)."""

from __future__ import annotations

from typing import Any

import numpy as np


def rolling(hits: list[bool], window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (shorter at the start)."""
    x = np.asarray(hits, dtype=np.float64)
    if x.size == 0:
        return x
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - window)
    out: np.ndarray = (c[idx] - c[lo]) / (idx - lo)
    return out


def plot_hit_trace(traces: dict[str, list[bool]], path: str, k: int = 20, window: int = 1000) -> None:
    """Rolling HR@k over the test stream, one line per recommender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, hits in traces.items():
        if hits:
            ax.plot(rolling(hits, window), label=f"{name} (HR@{k} {np.mean(hits):.3f})",
                    linewidth=2.0 if name == "model" else 1.0)
    ax.set_xlabel("judged test events, in stream order")
    ax.set_ylabel(f"HR@{k}, rolling over {window}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost_curve(lines: list[dict[str, Any]], path: str) -> None:
    """``bench core --curve``: clicks/s (the rounds' median) and p99 (per batch of clicks,
    or per click at batch 1; the first round's) against catalogue size (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted((int(line["curve_items"]),
                  float(line.get("curve_clicks_per_s_median", line["clicks_per_s"])), float(line["p99_ms"]))
                 for line in lines)
    if not pts:
        raise ValueError("no curve lines to plot")
    items, cps, p99 = (list(col) for col in zip(*pts, strict=True))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(items, cps, marker="o")
    rounds = int(lines[0].get("curve_rounds", 1))
    left.set_ylabel("clicks/s (learn + index refresh + recommend)"
                    + (f"\nmedian of {rounds} rounds" if rounds > 1 else ""))
    left.set_ylim(bottom=0)
    right.plot(items, p99, marker="o", color="tab:red")
    right.set_ylabel("p99 per batch of clicks, ms")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("items in the catalogue (preloaded)")
        ax.grid(alpha=0.3)
    batch = lines[0].get("batch", 1)
    fig.suptitle(f"sessionrec bench core --curve (batch {batch}, dim {lines[0].get('dim')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
