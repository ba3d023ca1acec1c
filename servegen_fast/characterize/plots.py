"""PNG plots of a log or trace, optionally against a reference (needs the `plot` extra: matplotlib).

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global state) and each
file is written under a temporary name and renamed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .analyze import IDC_SCALES, index_of_dispersion, rate_series
from ..io.atomic import atomic_path
from ..io.sources import RequestLog


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'servegen-fast[plot]' "
                           "(the text report works without it)") from None
    return Figure, FigureCanvasAgg


def require_matplotlib() -> None:
    """Raise the install hint now, before any work, if the plot extra is missing."""
    _matplotlib()


def _save(fig, canvas_cls, path: Path) -> Path:
    canvas_cls(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _ecdf(ax, v: np.ndarray, label: str) -> None:
    v = np.sort(v)
    if len(v):
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label)


def write_plots(trace: RequestLog, out_dir: str | os.PathLike, reference: RequestLog | None = None,
                names: tuple[str, str] = ("trace", "reference"), bin_s: float = 60.0) -> list[Path]:
    """rate.png, iat_cdf.png, length_cdf.png, input_output.png and idc.png (the IDC curve, burstiness
    over time scales) in `out_dir`; returns the paths."""
    Figure, Canvas = _matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logs = [(trace, names[0])] + ([(reference, names[1])] if reference is not None else [])
    paths = []

    fig = Figure(layout="constrained", figsize=(8, 3.5))
    ax = fig.add_subplot()
    for log, name in logs:
        r = rate_series(log.timestamp, log.span, bin_s)
        ax.step(np.arange(len(r)) * bin_s / 60.0, r, where="post", label=name)
    ax.set(xlabel="time (min)", ylabel=f"requests/s ({bin_s:.0f} s bins)", title="rate over time")
    ax.legend()
    paths.append(_save(fig, Canvas, out / "rate.png"))

    fig = Figure(layout="constrained", figsize=(6, 4))
    ax = fig.add_subplot()
    for log, name in logs:
        iat = np.diff(log.timestamp)
        _ecdf(ax, iat[iat > 0], name)  # a log x axis cannot show ties (zero gaps)
    ax.set(xscale="log", xlabel="inter-arrival time (s), zero gaps left out", ylabel="CDF", title="inter-arrival times")
    ax.legend()
    paths.append(_save(fig, Canvas, out / "iat_cdf.png"))

    fig = Figure(layout="constrained", figsize=(10, 4))
    for i, field in enumerate(("input_tokens", "output_tokens")):
        ax = fig.add_subplot(1, 2, i + 1)
        for log, name in logs:
            _ecdf(ax, np.maximum(getattr(log, field), 1), name)
        ax.set(xscale="log", xlabel=f"{field} (0 shown as 1)", ylabel="CDF", title=field)
        ax.legend()
    paths.append(_save(fig, Canvas, out / "length_cdf.png"))

    fig = Figure(layout="constrained", figsize=(5 * len(logs), 4.5))
    hi_in = max(float(np.log10(max(log.input_tokens.max(), 1) + 1)) for log, _ in logs)
    hi_out = max(float(np.log10(max(log.output_tokens.max(), 1) + 1)) for log, _ in logs)
    edges = (np.linspace(0, hi_in, 60), np.linspace(0, hi_out, 60))
    for i, (log, name) in enumerate(logs):
        ax = fig.add_subplot(1, len(logs), i + 1)
        h, _, _ = np.histogram2d(np.log10(log.input_tokens + 1.0), np.log10(log.output_tokens + 1.0), bins=edges)
        ax.pcolormesh(edges[0], edges[1], np.log10(1 + h).T, cmap="viridis")  # log shading: the tails stay visible
        ax.set(xlabel="log10(input tokens + 1)", ylabel="log10(output tokens + 1)", title=f"{name}: input vs output (log10(1 + count))")
    paths.append(_save(fig, Canvas, out / "input_output.png"))

    fig = Figure(layout="constrained", figsize=(6, 4))
    ax = fig.add_subplot()
    for log, name in logs:
        sc = np.array(IDC_SCALES, np.float64)
        idc = np.array([index_of_dispersion(log.timestamp, log.span, s) for s in sc])
        ok = np.isfinite(idc) & (idc > 0)
        ax.plot(sc[ok], idc[ok], marker="o", label=name)
    ax.axhline(1.0, color="grey", linestyle=":", label="Poisson")
    ax.set(xscale="log", yscale="log", xlabel="bin (s)", ylabel="IDC of counts (Var / Mean)",
           title="burstiness over time scales")
    ax.legend()
    paths.append(_save(fig, Canvas, out / "idc.png"))
    with_blocks = [(log, name) for log, name in logs if log.blocks is not None]
    if with_blocks:
        paths += _session_plots(with_blocks, out, Figure, Canvas)
    return paths


def _session_plots(logs, out: Path, Figure, Canvas) -> list[Path]:
    """sessions.png: the LRU hit-ratio curve (infinite cache as a dashed line), turns per session
    and inter-turn gaps, for the logs with block ids."""
    from .prefix_cache import block_hits, session_samples

    fig = Figure(layout="constrained", figsize=(14, 4))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for log, name in logs:
        h = block_hits(log)
        sizes = [int(c) for c in h["hit_ratio_lru"]]
        line, = axes[0].plot(sizes, list(h["hit_ratio_lru"].values()), marker="o", label=name)
        axes[0].axhline(h["hit_ratio_infinite"], color=line.get_color(), linestyle="--")
        s = session_samples(log)
        _ecdf(axes[1], s["turns"], name)
        _ecdf(axes[2], s["gaps"][s["gaps"] > 0], name)
    axes[0].set(xscale="log", xlabel="LRU cache size (blocks)", ylabel="block hit ratio",
                title="prefix-cache hit ratio (dashed: infinite)")
    axes[1].set(xscale="log", xlabel="turns per session", ylabel="CDF", title="turns per session")
    axes[2].set(xscale="log", xlabel="inter-turn gap (s)", ylabel="CDF", title="inter-turn gaps")
    for ax in axes:
        ax.legend()
    return [_save(fig, Canvas, out / "sessions.png")]
