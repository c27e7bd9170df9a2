"""Figure helpers (matplotlib, Agg backend): every figure is saved atomically in each
format of :class:`FigureStyle` (PNG + PDF by default) next to ``path_stem``
(``results/figures/<name>`` → ``<name>.png``, ``<name>.pdf``); each helper returns
the written paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.correlate import rank_correlation
from teachfit.io import atomic_path
from teachfit.settings import from_dict as settings_from_dict

FORMATS = ("png", "pdf", "svg")


@dataclass
class FigureStyle:
    dpi: int = field(default=150, metadata={"help": "raster resolution (PNG)"})
    width: float = field(default=6.0, metadata={"help": "figure width in inches"})
    height: float = field(default=4.0, metadata={"help": "figure height in inches"})
    font_size: float = field(default=10.0, metadata={"help": "base font size in points"})
    formats: list[str] = field(
        default_factory=lambda: ["png", "pdf"],
        metadata={"help": "file formats written", "choices": FORMATS},
    )
    cmap: str = field(default="viridis", metadata={"help": "colormap of heatmaps"})

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ValueError(f"figures.formats: {bad or self.formats} not allowed; allowed: {', '.join(FORMATS)}")
        if self.dpi < 10 or self.width <= 0 or self.height <= 0 or self.font_size <= 0:
            raise ValueError("figures: dpi ≥ 10 and positive width, height, font_size required")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FigureStyle:
        return settings_from_dict(cls, d, "figures")


def _figure(style: FigureStyle, width: float | None = None, height: float | None = None):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": style.font_size})
    return plt.subplots(figsize=(width or style.width, height or style.height))


def save(fig: Any, path_stem: str | Path, style: FigureStyle) -> list[Path]:
    """Save ``fig`` as ``<path_stem>.<fmt>`` for every format (atomic), close it, return paths."""
    import matplotlib.pyplot as plt

    stem = Path(path_stem)
    paths = []
    try:
        fig.tight_layout()
        for fmt in style.formats:
            target = stem.with_name(f"{stem.name}.{fmt}")
            with atomic_path(target, f".{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, dpi=style.dpi)
            paths.append(target)
    finally:
        plt.close(fig)
    return paths


def _need(df: pl.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; has {df.columns}")


def heatmap(df: pl.DataFrame, row: str, col: str, value: str, path_stem: str | Path, title: str = "",
            style: FigureStyle | None = None, fmt: str = ".2f") -> list[Path]:
    """Heatmap of ``value`` with one cell per (``row``, ``col``) (mean over duplicates; blank if missing)."""
    style = style or FigureStyle()
    _need(df, [row, col, value], "heatmap")
    rows = sorted(df[row].unique().to_list(), key=str)
    cols = sorted(df[col].unique().to_list(), key=str)
    grid = np.full((len(rows), len(cols)), np.nan)
    agg = df.group_by([row, col]).agg(pl.col(value).cast(pl.Float64).mean())
    ri = {r: i for i, r in enumerate(rows)}
    ci = {c: j for j, c in enumerate(cols)}
    for r, c, v in agg.iter_rows():
        grid[ri[r], ci[c]] = np.nan if v is None else v
    fig, ax = _figure(style, width=max(style.width, 1.0 + 0.8 * len(cols)),
                      height=max(style.height, 1.0 + 0.45 * len(rows)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=style.cmap, aspect="auto")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(col)
    ax.set_ylabel(row)
    finite = grid[np.isfinite(grid)]
    mid = float(finite.mean()) if finite.size else 0.0
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, format(grid[i, j], fmt), ha="center", va="center",
                        color="white" if grid[i, j] < mid else "black", fontsize=style.font_size * 0.8)
    ax.set_title(title)
    return save(fig, path_stem, style)


def scatter_with_rho(df: pl.DataFrame, x: str, y: str, path_stem: str | Path, title: str = "",
                     style: FigureStyle | None = None, label: str | None = None) -> list[Path]:
    """Scatter of ``y`` against ``x`` with Spearman ρ and Kendall τ in the title line."""
    style = style or FigureStyle()
    _need(df, [x, y, *([label] if label else [])], "scatter_with_rho")
    xs = df[x].cast(pl.Float64).to_numpy()
    ys = df[y].cast(pl.Float64).to_numpy()
    rho, p_rho, n = rank_correlation(xs, ys, "spearman")
    tau, _, _ = rank_correlation(xs, ys, "kendall")
    fig, ax = _figure(style)
    ax.scatter(xs, ys, s=28, alpha=0.85)
    if label:
        for xv, yv, lab in zip(xs, ys, df[label].to_list(), strict=True):
            if np.isfinite(xv) and np.isfinite(yv):
                ax.annotate(str(lab), (xv, yv), textcoords="offset points", xytext=(3, 3),
                            fontsize=style.font_size * 0.7)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    stats = f"Spearman ρ = {rho:.2f} (p = {p_rho:.2g}), Kendall τ = {tau:.2f}, n = {n}"
    ax.set_title(f"{title}\n{stats}" if title else stats)
    return save(fig, path_stem, style)


def bar(df: pl.DataFrame, x: str, y: str, path_stem: str | Path, title: str = "",
        style: FigureStyle | None = None, yerr: str | None = None) -> list[Path]:
    """Bar chart of ``y`` per ``x`` (in the frame's row order)."""
    style = style or FigureStyle()
    _need(df, [x, y, *([yerr] if yerr else [])], "bar")
    labels = [str(v) for v in df[x].to_list()]
    values = df[y].cast(pl.Float64).to_numpy()
    fig, ax = _figure(style, width=max(style.width, 1.0 + 0.5 * len(labels)))
    ax.bar(range(len(labels)), values, yerr=df[yerr].cast(pl.Float64).to_numpy() if yerr else None,
           capsize=3 if yerr else 0)
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 4 else 0,
                  ha="right" if len(labels) > 4 else "center")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    return save(fig, path_stem, style)


def line_curves(df: pl.DataFrame, x: str, y: str, group: str, path_stem: str | Path, title: str = "",
                style: FigureStyle | None = None, marks: Mapping[str, float] | None = None,
                band: tuple[str, str] | None = None) -> list[Path]:
    """One line of ``y`` over ``x`` per ``group`` (sorted by x); ``marks`` draws labelled
    vertical lines (e.g. ``{"IFS plateau": 300}``); ``band = (lower, upper)`` names two columns
    drawn as a shaded band around each line (e.g. a 95% interval)."""
    style = style or FigureStyle()
    _need(df, [x, y, group, *(band or ())], "line_curves")
    fig, ax = _figure(style)
    for name in sorted(df[group].unique().to_list(), key=str):
        sub = df.filter(pl.col(group) == name).sort(x)
        (line,) = ax.plot(sub[x].to_numpy(), sub[y].cast(pl.Float64).to_numpy(), marker="o", markersize=3,
                          label=str(name))
        if band:
            ax.fill_between(sub[x].to_numpy(), sub[band[0]].cast(pl.Float64).to_numpy(),
                            sub[band[1]].cast(pl.Float64).to_numpy(), color=line.get_color(), alpha=0.15,
                            linewidth=0)
    for label, xv in (marks or {}).items():
        ax.axvline(float(xv), linestyle="--", color="grey", linewidth=1)
        ax.annotate(str(label), (float(xv), 1.0), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=style.font_size * 0.75, color="grey")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.legend(fontsize=style.font_size * 0.8)
    return save(fig, path_stem, style)


def density_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float] | None]], path_stem: str | Path,
                   title: str = "", xlabel: str = "", style: FigureStyle | None = None,
                   invert_x: bool = False, notes: Mapping[str, str] | None = None) -> list[Path]:
    """One precomputed density curve ``(x, y)`` per name (a ``None`` y is listed in the legend as
    not drawn, with its ``notes`` entry); ``invert_x`` flips the x axis (high values left)."""
    style = style or FigureStyle()
    fig, ax = _figure(style)
    notes = notes or {}
    for name, (x, y) in curves.items():
        if y is None:
            ax.plot([], [], label=f"{name}: {notes.get(name, 'no density')}")
            continue
        line = ax.plot(np.asarray(x), np.asarray(y), linewidth=1.5,
                       label=f"{name} ({notes[name]})" if name in notes else name)[0]
        ax.fill_between(np.asarray(x), np.asarray(y), alpha=0.15, color=line.get_color())
    if invert_x:
        ax.invert_xaxis()
    ax.grid(linestyle="-.", alpha=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    if curves:
        ax.legend(fontsize=style.font_size * 0.8)
    return save(fig, path_stem, style)


def stacked_bars(df: pl.DataFrame, label: str, parts: Sequence[str], path_stem: str | Path, title: str = "",
                 style: FigureStyle | None = None, xlabel: str = "count") -> list[Path]:
    """Horizontal bars, one per row of ``df`` (labelled by column ``label``), each stacked from
    the columns ``parts`` in order (nulls count 0); parts that are 0 in every row are left out
    of the legend."""
    style = style or FigureStyle()
    _need(df, [label, *parts], "stacked_bars")
    labels = [str(v) for v in df[label].to_list()]
    fig, ax = _figure(style, height=max(style.height, 1.0 + 0.4 * len(labels)))
    left = np.zeros(len(labels))
    for part in parts:
        vals = df[part].cast(pl.Float64).fill_null(0.0).to_numpy()
        if not vals.any():
            continue
        ax.barh(range(len(labels)), vals, left=left, label=part)
        left += vals
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    if left.any():
        ax.legend(fontsize=style.font_size * 0.7, loc="best")
    return save(fig, path_stem, style)
