"""Plots of a replay (needs matplotlib, the `plot` extra): latency over time against the
offered load, and CDFs of TTFT, TPOT, end-to-end latency and release lateness."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .results import read_requests


def plot_results(directory) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'servegen-fast[plot]'") from None
    d = Path(directory)
    t = read_requests(d)
    col = {n: t.column(n).to_numpy(zero_copy_only=False) for n in t.column_names}
    done = col["status"] == "completed"
    paths = []

    fig, ax = plt.subplots(figsize=(9, 4.5))
    sched = col["scheduled"]
    span = max(float(sched.max()) if len(sched) else 0.0, 1e-9)
    width = max(span / 60, 1.0)
    bins = np.arange(0, span + width, width)
    counts, edges = np.histogram(sched, bins=bins)
    ax2 = ax.twinx()
    ax2.step(edges[:-1], counts / width, where="post", color="0.6", label="offered load")
    ax2.set_ylabel("offered load (req/s)")
    ax.scatter(col["released"][done], col["ttft"][done] * 1e3, s=6, label="TTFT")
    ax.scatter(col["released"][done], col["e2e"][done] * 1e3, s=6, label="end-to-end", alpha=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("release time (s from run start)")
    ax.set_ylabel("latency (ms)")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper left")
    ax.set_title("latency over time against offered load")
    fig.tight_layout()
    p = d / "latency_over_time.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
    for ax, name in zip(axes, ("ttft", "tpot", "e2e", "lateness")):
        v = col[name][done] if name != "lateness" else col[name]
        v = np.sort(v[np.isfinite(v)]) * 1e3
        if len(v):
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("CDF")
    fig.tight_layout()
    p = d / "cdf.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths
