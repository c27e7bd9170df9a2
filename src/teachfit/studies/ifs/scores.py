"""IFS / IFS_partial / IFS_full, the IFS-plateau early-stopping rule, and rules
``select_checkpoint``, ``build_ifs_tables``, ``plot_ifs_curve`` (AlShikh et al. 2023).

IFS = share of responses the tone classifier labels answer-like (:func:`ifs_scores`). A run's
curve over its checkpoints and the plateau choice are computed in one place,
:func:`ifs_curve`; the plateau rule itself is :func:`select_plateau_checkpoint`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
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
        "n": len(y),
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
    """The plateau rule of :func:`select_plateau_checkpoint` (config ``ifs.early_stopping``).

    No field has a default: the config schema holds them (``defaults("ifs.early_stopping")``).
    """

    epsilon: float = field(metadata={"help": "smallest IFS rise that counts as progress (a rise "
                                             "below it is flat)"})
    k: int = field(metadata={"help": "checkpoints after the candidate that must stay flat"})

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"plateau.epsilon: must be > 0, got {self.epsilon}")
        if int(self.k) < 1:
            raise ValueError(f"plateau.k: must be >= 1, got {self.k}")

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
    if any(b <= a for a, b in itertools.pairwise(st)):
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


def ifs_curve(scores: pl.DataFrame, train_log: pl.DataFrame,
              settings: PlateauSettings | Mapping[str, Any]) -> tuple[pl.DataFrame, PlateauChoice]:
    """One SFT run's IFS / ObjecQA curve over its checkpoints and the plateau-selected checkpoint.

    ``scores``: the run's ``score_ifs`` table (columns ``checkpoint``, ``step``,
    ``examples_seen``, ``task``; ``variant`` and ``label`` on ``task == "ifs"`` rows,
    ``judge_label`` on ``task == "objecqa"`` rows). ``train_log``: the run's
    ``train_log.parquet`` (``step``, ``loss``, possibly null). ``settings``: config
    ``ifs.early_stopping``.

    Returns ``(curve, choice)``: one row per checkpoint, sorted by step, columns
    ``checkpoint, step, examples_seen, ifs, ifs_partial, ifs_full, n, n_partial, n_full`` (from
    :func:`ifs_scores`), ``objecqa`` (share judged objective; NaN without ObjecQA rows),
    ``train_loss`` (the last logged training loss at or before the checkpoint's step, nats per
    token; NaN when none) and ``selected`` (True on the one row :func:`select_plateau_checkpoint`
    picks on ``ifs``). Two checkpoints at one step raise :class:`DataError`. Source: AlShikh et
    al. 2023 (IFS plateau as an early-stopping criterion).
    """
    s = settings if isinstance(settings, PlateauSettings) else PlateauSettings.from_dict(settings)
    require_columns(scores, ["checkpoint", "step", "examples_seen", "task"], "IFS scores")
    rows = []
    for (ck,), g in scores.group_by(["checkpoint"], maintain_order=True):
        sc = ifs_scores(g.filter(pl.col("task") == "ifs"))
        obj = g.filter(pl.col("task") == "objecqa")
        rows.append({"checkpoint": ck, "step": int(g["step"][0]), "examples_seen": int(g["examples_seen"][0]),
                     **sc, "objecqa": float((obj["judge_label"] == "objective").mean()) if obj.height
                     else float("nan")})
    curve = pl.DataFrame(rows).sort("step")
    if curve["step"].n_unique() != curve.height:
        dup = curve.filter(pl.col("step").is_duplicated())
        raise DataError(f"IFS scores: checkpoints {sorted(dup['checkpoint'].to_list())} share a step "
                        f"({sorted(set(dup['step'].to_list()))})")
    losses = [float("nan")] * curve.height
    if "loss" in train_log.columns:
        logged = train_log.filter(pl.col("loss").is_not_null())
        for i, step in enumerate(curve["step"].to_list()):
            prior = logged.filter(pl.col("step") <= step)
            if prior.height:
                losses[i] = float(prior["loss"][-1])
    choice = select_plateau_checkpoint(curve["step"].to_list(), curve["ifs"].to_list(), s.epsilon, s.k)
    curve = curve.with_columns(pl.Series("train_loss", losses),
                               pl.Series("selected", [i == choice.index for i in range(curve.height)]))
    return curve, choice


def select_checkpoint(scores: str | Path, train_log: str | Path, selected: str | Path,
                      curve: str | Path, early_stopping: Mapping[str, Any],
                      run: Mapping[str, str]) -> dict[str, Any]:
    """Rule ``select_checkpoint``: a run's IFS curve and its plateau-selected checkpoint.

    ``scores`` / ``train_log``: see :func:`ifs_curve`; ``early_stopping`` = config
    ``ifs.early_stopping``; ``run``: the run's ``{dataset, generator, selection, base}``,
    added as columns. Writes the curve (Parquet) to ``curve`` and
    ``{step, checkpoint, plateau_found, epsilon, k, dataset, generator, selection, base}`` to
    ``selected`` (JSON, read by the ``final_and_selected`` evaluation); returns that dict.
    """
    s = PlateauSettings.from_dict(early_stopping)
    table, choice = ifs_curve(read_parquet(scores), read_parquet(train_log), s)
    table = table.with_columns(*[pl.lit(v).alias(k) for k, v in run.items()])
    idx = choice.index
    sel = {"step": int(table["step"][idx]), "checkpoint": table["checkpoint"][idx],
           "plateau_found": bool(choice.plateau_found), "epsilon": float(s.epsilon), "k": int(s.k), **run}
    write_parquet(table, curve)
    write_json(sel, selected)
    return sel


def build_ifs_tables(model_scores: list[str], curves: list[str], evals: list[str], models: str | Path,
                     checkpoints: str | Path, early_stopping: str | Path,
                     performance: Mapping[str, Any]) -> None:
    """Rule ``build_ifs_tables``: the IFS study's three tables.

    * ``models`` (CSV): :func:`ifs_table` per (model, prompt format) of every ``score_ifs``
      table in ``model_scores``, plus ``objecqa`` (the model's share of objective answers).
    * ``checkpoints`` (CSV): every run's curve (:func:`select_checkpoint`'s Parquet files in
      ``curves``) stacked.
    * ``early_stopping`` (CSV): per run (``curves`` and ``evals`` are aligned, one per run),
      the selected and the last step and, for each, every ``performance.metrics`` task/metric
      value from the run's ``summarize_evals`` table (NaN when that step was not evaluated)
      and their mean (``<which>:average``). ``performance`` = config ``performance``.
      Source: AlShikh et al. 2023 (early stopping vs the last checkpoint).
    """
    if len(curves) != len(evals):
        raise ValueError(f"build_ifs_tables: {len(curves)} curves but {len(evals)} eval tables "
                         "(one of each per run)")
    rows = []
    for p in model_scores:
        s = read_parquet(p)
        t = ifs_table(s.filter(pl.col("task") == "ifs"), by=("model", "fmt"))
        obj = s.filter(pl.col("task") == "objecqa")
        t = t.with_columns(pl.lit(float((obj["judge_label"] == "objective").mean()) if obj.height
                                  else float("nan")).alias("objecqa"))
        rows.append(t)
    write_csv(pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame(), models)
    cur = pl.concat([read_parquet(p) for p in curves], how="diagonal_relaxed") if curves else pl.DataFrame()
    write_csv(cur, checkpoints)
    es_rows = []
    metrics = performance["metrics"]
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
    write_csv(pl.DataFrame(es_rows) if es_rows else pl.DataFrame(), early_stopping)


def plot_ifs_curve(curve: str | Path, figure: str | Path, style: Mapping[str, Any]) -> None:
    """Rule ``plot_ifs_curve``: IFS, IFS_partial, IFS_full and ObjecQA over examples seen for one
    run (``curve``: :func:`select_checkpoint`'s Parquet), the plateau-selected checkpoint marked.

    ``style`` = config ``analysis.figures`` (only PNG is written, to ``figure``).
    """
    from teachfit import figures

    fs = figures.FigureStyle.from_dict({**style, "formats": ["png"]})
    c = read_parquet(curve)
    long = pl.concat([
        c.select("examples_seen", pl.col(m).alias("value"), pl.lit(m).alias("metric"))
        for m in ("ifs", "ifs_partial", "ifs_full", "objecqa")
    ])
    sel = c.filter(pl.col("selected"))
    marks = {f"IFS plateau (step {sel['step'][0]})": float(sel["examples_seen"][0])} if sel.height else None
    run = "/".join(str(c[k][0]) for k in ("dataset", "generator", "selection", "base"))
    figures.line_curves(long, x="examples_seen", y="value", group="metric",
                        path_stem=Path(figure).with_suffix(""), title=f"IFS and ObjecQA: {run}",
                        style=fs, marks=marks)
