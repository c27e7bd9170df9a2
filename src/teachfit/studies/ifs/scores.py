"""IFS / IFS_partial / IFS_full, the plateau rule, and rules ``select_checkpoint``, ``build_ifs_tables``, ``plot_ifs_curve``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import (
    DataError,
    read_parquet,
    require_columns,
    write_csv,
    write_json,
    write_parquet,
)
from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)



IFS_VARIANTS = ("full", "partial")


def ifs_scores(df: pl.DataFrame) -> dict[str, float | int]:
    """IFS = share of responses classified answer-like (label 1).

    ``ifs`` over all rows, ``ifs_partial`` / ``ifs_full`` over rows with ``variant`` partial /
    full; a share over zero rows is NaN. Labels must be 0/1 (no nulls).
    """
    require_columns(df, ["variant", "label"], "IFS responses")
    variants = df["variant"].to_list()
    labels = df["label"].to_list()
    bad_v = sorted({str(v) for v in variants if v not in IFS_VARIANTS})
    if bad_v:
        raise DataError(f"IFS responses: variant(s) {bad_v} not allowed; allowed: {IFS_VARIANTS}")
    if any(y not in (0, 1) or isinstance(y, float) and math.isnan(y) for y in labels):
        raise DataError("IFS responses: column 'label' must be 0/1 with no nulls")
    y = np.asarray(labels, dtype=np.float64)
    v = np.asarray(variants, dtype=object)

    def share(mask: np.ndarray) -> float:
        return float(y[mask].mean()) if mask.any() else float("nan")

    all_mask = np.ones(len(y), dtype=bool)
    return {
        "ifs": share(all_mask),
        "ifs_partial": share(v == "partial"),
        "ifs_full": share(v == "full"),
        "n": int(len(y)),
        "n_partial": int((v == "partial").sum()),
        "n_full": int((v == "full").sum()),
    }


def ifs_table(df: pl.DataFrame, by: Sequence[str] = ("model", "fmt")) -> pl.DataFrame:
    """:func:`ifs_scores` per group (e.g. per model and prompt format), sorted by ``by``."""
    by = list(by)
    require_columns(df, [*by, "variant", "label"], "IFS responses")
    rows = []
    for key, group in df.group_by(by, maintain_order=True):
        rows.append({**dict(zip(by, key)), **ifs_scores(group)})
    return pl.DataFrame(rows).sort(by)


@dataclass(frozen=True)
class PlateauChoice:
    """The checkpoint chosen by :func:`select_plateau_checkpoint`."""

    index: int
    step: int
    ifs: float
    plateau_found: bool


@dataclass
class PlateauSettings:
    """The plateau rule of :func:`select_plateau_checkpoint`."""

    epsilon: float = field(default=0.02, metadata={"help": "largest rise (exclusive) that still counts as flat"})
    k: int = field(default=2, metadata={"help": "checkpoints after the candidate that must stay flat"})
    metric: str = field(default="ifs", metadata={"help": "column the rule is applied to",
                                                 "choices": ("ifs", "ifs_partial", "ifs_full")})

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"plateau.epsilon: must be > 0, got {self.epsilon}")
        if int(self.k) < 1:
            raise ValueError(f"plateau.k: must be >= 1, got {self.k}")
        if self.metric not in ("ifs", "ifs_partial", "ifs_full"):
            raise ValueError(
                f"plateau.metric: {self.metric!r} not allowed; allowed: ifs, ifs_partial, ifs_full"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PlateauSettings:
        return settings_from_dict(cls, d, "plateau")


def select_plateau_checkpoint(
    steps: Sequence[int], ifs: Sequence[float], epsilon: float, k: int
) -> PlateauChoice:
    """Early stopping by IFS plateau.

    Rule: drop checkpoints whose IFS is NaN (they are neither candidates nor part of any
    window); on the rest, indexed 0..N-1 in step order, select the first ``i`` with a
    *full* window of ``k`` later checkpoints (``i + k <= N - 1``) such that
    ``max(IFS[i+1 .. i+k]) - IFS[i] < epsilon`` (IFS never rises by ``epsilon`` or more above
    ``IFS[i]`` in the next ``k`` checkpoints; drops are allowed). A candidate too close to the
    end for a full window is never selected. If no ``i`` qualifies (the curve is still rising,
    or there are fewer than ``k + 1`` valid checkpoints), the last valid checkpoint is
    returned with ``plateau_found=False``.

    ``steps`` must be strictly increasing; ``epsilon > 0``, ``k >= 1``. The returned
    ``index`` points into the original (NaN-including) lists. All-NaN input raises.
    """
    if len(steps) != len(ifs):
        raise ValueError(f"plateau: {len(steps)} steps but {len(ifs)} IFS values")
    if not len(steps):
        raise ValueError("plateau: no checkpoints")
    if not epsilon > 0:
        raise ValueError(f"plateau: epsilon must be > 0, got {epsilon}")
    if int(k) < 1:
        raise ValueError(f"plateau: k must be >= 1, got {k}")
    st = [int(s) for s in steps]
    if any(b <= a for a, b in zip(st, st[1:])):
        raise ValueError(f"plateau: steps must be strictly increasing, got {st}")
    vals = np.asarray(ifs, dtype=np.float64)
    valid = [i for i in range(len(vals)) if not np.isnan(vals[i])]
    if not valid:
        raise ValueError("plateau: every IFS value is NaN")
    v = vals[valid]
    for j in range(len(v) - k):
        if float(v[j + 1:j + 1 + k].max()) - float(v[j]) < epsilon:
            i = valid[j]
            return PlateauChoice(index=i, step=st[i], ifs=float(vals[i]), plateau_found=True)
    i = valid[-1]
    return PlateauChoice(index=i, step=st[i], ifs=float(vals[i]), plateau_found=False)


CHECKPOINT_COLUMNS = ("run", "step", "examples_seen", "ifs", "ifs_partial", "ifs_full",
                      "objecqa", "train_loss")


def checkpoint_ifs_table(
    rows: pl.DataFrame | Iterable[Mapping[str, Any]],
    epsilon: float = 0.02,
    k: int = 2,
    metric: str = "ifs",
) -> pl.DataFrame:
    """Per-checkpoint table with the plateau choice of each run.

    ``rows``: one row per (run, step) with ``run``, ``step``, ``metric`` (default ``ifs``) and
    optionally ``examples_seen``, ``ifs_partial``, ``ifs_full``, ``objecqa``, ``train_loss`` and
    any other columns (kept). Returns the rows sorted by run and step, plus ``selected``
    (True on exactly one row per run: :func:`select_plateau_checkpoint` on ``metric``),
    ``plateau_found`` (per run), and ``<metric>_delta`` / ``objecqa_delta`` (change from the
    run's previous checkpoint; null on the first), the two curves the paper compares.
    """
    PlateauSettings(epsilon=epsilon, k=k, metric=metric)
    df = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows))
    require_columns(df, ["run", "step", metric], "checkpoint table")
    dup = df.group_by(["run", "step"]).len().filter(pl.col("len") > 1)
    if dup.height:
        raise DataError(
            f"checkpoint table: duplicate (run, step) rows, e.g. {dup.row(0)[:2]}"
        )
    df = df.with_columns(pl.col(metric).cast(pl.Float64)).sort(["run", "step"])
    selected = np.zeros(df.height, dtype=bool)
    found = np.zeros(df.height, dtype=bool)
    runs = df["run"].to_list()
    start = 0
    while start < df.height:
        end = start
        while end < df.height and runs[end] == runs[start]:
            end += 1
        choice = select_plateau_checkpoint(
            df["step"].slice(start, end - start).to_list(),
            df[metric].slice(start, end - start).fill_null(float("nan")).to_list(),
            epsilon, k,
        )
        selected[start + choice.index] = True
        found[start:end] = choice.plateau_found
        start = end
    extra = [pl.col(metric).diff().over("run").alias(f"{metric}_delta")]
    if "objecqa" in df.columns:
        extra.append(pl.col("objecqa").cast(pl.Float64).diff().over("run").alias("objecqa_delta"))
    return df.with_columns(
        pl.Series("selected", selected), pl.Series("plateau_found", found), *extra
    )


def _curve(scores: pl.DataFrame) -> pl.DataFrame:

    rows = []
    for (ck,), g in scores.group_by(["checkpoint"], maintain_order=True):
        s = ifs_scores(g.filter(pl.col("task") == "ifs"))
        obj = g.filter(pl.col("task") == "objecqa")
        rows.append({"checkpoint": ck, "step": int(g["step"][0]), "examples_seen": int(g["examples_seen"][0]),
                     **s, "objecqa": float((obj["judge_label"] == "objective").mean()) if obj.height
                     else float("nan")})
    return pl.DataFrame(rows).sort("step")


def select_checkpoint(scores_path: str | Path, train_log_path: str | Path, selected_path: str | Path,
                      curve_path: str | Path, early_stopping: dict[str, Any],
                      run: dict[str, str]) -> dict[str, Any]:
    """IFS curve of one run and the plateau-selected checkpoint (rule in teachfit.studies.ifs)."""

    curve = _curve(read_parquet(scores_path))
    log_tbl = read_parquet(train_log_path)
    loss_col = "loss" if "loss" in log_tbl.columns else None
    losses = []
    for step in curve["step"].to_list():
        prior = log_tbl.filter(pl.col("step") <= step) if loss_col else pl.DataFrame()
        losses.append(float(prior.filter(pl.col(loss_col).is_not_null())[loss_col][-1])
                      if loss_col and prior.filter(pl.col(loss_col).is_not_null()).height else float("nan"))
    eps, k = float(early_stopping.get("epsilon", 0.02)), int(early_stopping.get("k", 2))
    choice = select_plateau_checkpoint(curve["step"].to_list(), curve["ifs"].to_list(), eps, k)
    idx = choice.index
    curve = curve.with_columns(pl.Series("train_loss", losses),
                               pl.Series("selected", [i == idx for i in range(curve.height)]),
                               *[pl.lit(v).alias(kk) for kk, v in run.items()])
    sel = {"step": int(curve["step"][idx]), "checkpoint": curve["checkpoint"][idx],
           "plateau_found": bool(choice.plateau_found), "epsilon": eps, "k": k, **run}
    write_parquet(curve, curve_path)
    write_json(sel, selected_path)
    return sel


def build_ifs_tables(model_scores: list[str], curves: list[str], evals: list[str],
                     outputs: dict[str, str], performance: dict[str, Any]) -> None:

    rows = []
    for p in model_scores:
        s = read_parquet(p)
        t = ifs_table(s.filter(pl.col("task") == "ifs"), by=("model", "fmt"))
        obj = s.filter(pl.col("task") == "objecqa")
        t = t.with_columns(pl.lit(float((obj["judge_label"] == "objective").mean()) if obj.height
                                  else float("nan")).alias("objecqa"))
        rows.append(t)
    write_csv(pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame(), outputs["models"])
    cur = pl.concat([read_parquet(p) for p in curves], how="diagonal_relaxed") if curves else pl.DataFrame()
    write_csv(cur, outputs["checkpoints"])
    es_rows = []
    metrics = performance.get("metrics", {})
    for cpath, epath in zip(curves, evals):
        c = read_parquet(cpath)
        e = read_parquet(epath)
        sel_step = int(c.filter(pl.col("selected"))["step"][0])
        last_step = int(e["step"].max())
        row: dict[str, Any] = {k: c[k][0] for k in ("dataset", "generator", "selection", "base")}
        row.update(selected_step=sel_step, last_step=last_step)
        for which, step in (("selected", sel_step), ("last", last_step)):
            sub = e.filter(pl.col("step") == step)
            vals = []
            for task, metric in metrics.items():
                hit = sub.filter((pl.col("task") == task) & (pl.col("metric") == metric))
                v = float(hit["value"][0]) if hit.height else float("nan")
                row[f"{which}:{task}/{metric}"] = v
                vals.append(v)
            row[f"{which}:average"] = float(np.mean(vals)) if vals else float("nan")
        es_rows.append(row)
    write_csv(pl.DataFrame(es_rows) if es_rows else pl.DataFrame(), outputs["early_stopping"])


def plot_ifs_curve(curve_path: str | Path, out_png: str | Path, style: dict[str, Any]) -> None:
    from teachfit import figures

    fs = figures.FigureStyle.from_dict({**style, "formats": ["png"]})
    c = read_parquet(curve_path)
    long = pl.concat([
        c.select("examples_seen", pl.col(m).alias("value"), pl.lit(m).alias("metric"))
        for m in ("ifs", "ifs_partial", "ifs_full", "objecqa")
    ])
    sel = c.filter(pl.col("selected"))
    marks = {f"IFS plateau (step {sel['step'][0]})": float(sel["examples_seen"][0])} if sel.height else None
    run = "/".join(str(c[k][0]) for k in ("dataset", "generator", "selection", "base"))
    figures.line_curves(long, x="examples_seen", y="value", group="metric",
                        path_stem=Path(out_png).with_suffix(""), title=f"IFS and ObjecQA: {run}",
                        style=fs, marks=marks)
