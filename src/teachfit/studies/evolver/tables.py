"""Rules ``build_evolver_tables`` and ``plot_evolver_figures``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import (
    DataError,
    read_parquet,
    write_csv,
)

log = logging.getLogger(__name__)



EVAL_RE = re.compile(
    r"results/eval/(?P<dataset>[^/]+)/(?P<generator>[^/]+)/(?P<selection>[^/]+)/(?P<base>[^/]+)\.parquet$")


def _scores_row(path: str, performance: dict[str, Any]) -> dict[str, Any]:
    m = EVAL_RE.search(str(path))
    if not m:
        raise DataError(f"{path}: not a results/eval/<dataset>/<generator>/<selection>/<base>.parquet path")
    tidy = read_parquet(path, required=["task", "metric", "value", "is_final"]).filter(pl.col("is_final"))
    seedset, scenario, evolver = m["dataset"].split("-")
    row: dict[str, Any] = {"seedset": seedset, "scenario": scenario, "evolver": evolver,
                           "teacher": m["generator"], "selection": m["selection"], "base": m["base"]}
    for r in tidy.iter_rows(named=True):
        row[f"{r['task']}/{r['metric']}"] = r["value"]
    picked = [row.get(f"{t}/{k}") for t, k in performance.get("metrics", {}).items()]
    picked = [v for v in picked if v is not None]
    row["average"] = float(np.mean(picked)) if picked else float("nan")
    return row


def build_evolver_tables(inputs: dict[str, list[str]], outputs: dict[str, str],
                         performance: dict[str, Any], selection: dict[str, Any]) -> None:
    from teachfit.studies.evolver.diversity import top1_stats

    comparison = pl.DataFrame([_scores_row(p, performance) for p in inputs["comparison"]])
    write_csv(comparison.sort(["seedset", "scenario", "base", "evolver"]), outputs["comparison"])

    sel_rows = [_scores_row(p, performance) for p in inputs["selection"]]
    sel = pl.DataFrame(sel_rows) if sel_rows else pl.DataFrame()
    write_csv(sel.sort(["evolver", "base", "selection"]) if sel.height else sel, outputs["selection"])

    stats = pl.concat([read_parquet(p) for p in inputs["stats"]], how="diagonal_relaxed")
    agg = stats.group_by(["seedset", "scenario", "evolver", "round"]).agg(
        pl.len().alias("n_trained"),
        pl.col("length_words").mean().alias("length_words"),
        pl.col("difficulty").mean().alias("difficulty"),
        pl.col("nn_distance").mean().alias("diversity_nn_distance"),
        pl.col("reward").mean().alias("reward"),
    )
    drops = pl.concat([read_parquet(p) for p in inputs["drops"]], how="diagonal_relaxed")
    wide = drops.filter(pl.col("round") > 0).pivot(
        on="reason", index=["evolver", "scenario", "round"], values="count", aggregate_function="sum"
    ).fill_null(0)
    wide = wide.rename({c: f"n_{c}" if c not in ("evolver", "scenario", "round") else c for c in wide.columns})
    if "n_kept" in wide.columns:
        drop_cols = [c for c in wide.columns if c.startswith("n_") and c != "n_kept"]
        wide = wide.with_columns(pl.sum_horizontal(drop_cols).alias("n_dropped") if drop_cols
                                 else pl.lit(0).alias("n_dropped"))
    table = wide.join(agg, on=["evolver", "scenario", "round"], how="left").sort(
        ["scenario", "evolver", "round"])
    write_csv(table, outputs["stats"])

    t1_rows = []
    for p in inputs["rounds"]:
        tp = Path(str(p).replace(".parquet", ".top1.parquet"))
        if not tp.exists():
            continue
        t = read_parquet(tp)
        s = top1_stats(t["top1_logprobs"].to_list())
        t1_rows.append({"evolver": t["evolver"][0], "scenario": t["scenario"][0], "round": t["round"][0], **s})
    write_csv(pl.DataFrame(t1_rows) if t1_rows else pl.DataFrame(), outputs["top1"])


def plot_evolver_figures(rounds: list[str], stats_csv: str | Path, selection_csv: str | Path,
                         outputs: dict[str, str], style: dict[str, Any]) -> None:
    from teachfit import figures

    fs = figures.FigureStyle.from_dict(style)
    samples: dict[str, list[float]] = {}
    for p in rounds:
        tp = Path(str(p).replace(".parquet", ".top1.parquet"))
        if tp.exists():
            t = read_parquet(tp)
            vals = [float(np.exp(v)) for row in t["top1_logprobs"].to_list() for v in (row or [])]
            samples.setdefault(t["evolver"][0], []).extend(vals)
    figures.hist_kde(samples, Path(outputs["top1"]).with_suffix(""),
                     title="Evolver top-1 token probability (greedy)", xlabel="top-1 probability", style=fs)
    stats = pl.read_csv(stats_csv)
    stats = stats.with_columns((pl.col("evolver") + " / " + pl.col("scenario")).alias("series"))
    figures.line_curves(stats.filter(pl.col("difficulty").is_not_null()), x="round", y="difficulty",
                        group="series", path_stem=Path(outputs["difficulty"]).with_suffix(""),
                        title="Judged difficulty of evolved instructions per round", style=fs)
    sel = pl.read_csv(selection_csv) if Path(selection_csv).stat().st_size > 1 else pl.DataFrame()
    if sel.height:
        sel = sel.with_columns((pl.col("evolver") + ": " + pl.col("selection")).alias("label"))
        figures.bar(sel, x="label", y="average", path_stem=Path(outputs["selection"]).with_suffix(""),
                    title="Average performance by data selection method", style=fs)
    else:
        figures.bar(pl.DataFrame({"label": ["(no selection runs)"], "average": [0.0]}), x="label",
                    y="average", path_stem=Path(outputs["selection"]).with_suffix(""),
                    title="Selection comparison not activated", style=fs)
