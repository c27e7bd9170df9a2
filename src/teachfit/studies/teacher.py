"""Stages of the teacher study (Xu et al. 2024, "Stronger Models are NOT Stronger Teachers").

Conventions (also in the README):

* per-response losses are mean per-token NLLs (nats); a data set's L is the mean
  of its responses' L(A|Q) under the scorer; PPL = exp(L);
* IFD per response = L(A|Q) / L(A), averaged over responses;
* length = response tokens under the reference model's tokenizer (one tokenizer
  for every generator, so lengths are comparable);
* CAR = (mean reward + reward_offset) / (1 + beta * L_base), L_base the base
  model's mean L(A|Q) with the SFT chat template.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, read_parquet, write_csv, write_parquet

log = logging.getLogger(__name__)

SCORE_RE = re.compile(r"results/scores/(?P<dataset>[^/]+)/(?P<generator>[^/]+)/(?P<scorer>[^/]+)\.parquet$")
RESP_RE = re.compile(r"results/responses/(?P<dataset>[^/]+)/(?P<generator>[^/]+)\.parquet$")
WINRATE_RE = re.compile(r"results/winrate/(?P<dataset>[^/]+)/(?P<generator>[^/]+)/(?P<selection>[^/]+)/"
                        r"(?P<base>[^/]+)\.json$")


def _mean(values: pl.Series) -> float:
    arr = values.drop_nulls().to_numpy().astype(float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _scorer_summary(scores: pl.DataFrame) -> dict[str, float]:
    from teachfit.scoring.metrics import ifd

    valid = scores.filter(pl.col("loss_a_given_q").is_not_nan() & pl.col("loss_a").is_not_nan())
    per_ifd = ifd(valid["loss_a_given_q"].to_numpy(), valid["loss_a"].to_numpy())
    loss = _mean(valid["loss_a_given_q"])
    return {
        "loss": loss,
        "ppl": float(np.exp(loss)),
        "ifd": float(np.nanmean(per_ifd)) if len(per_ifd) else float("nan"),
        "length": _mean(valid["n_a_tokens"].cast(pl.Float64)),
        "n_truncated": int(scores["truncated"].sum()) if "truncated" in scores.columns else 0,
        "n_scored": valid.height,
    }


def compute_data_metrics(responses_paths: list[str], scores_paths: list[str],
                         out_path: str | Path, design: dict[str, Any]) -> pl.DataFrame:
    """One row per (generator, base): reward, length, PPL/IFD under base and reference, L_base."""
    rewards: dict[str, pl.DataFrame] = {}
    for p in responses_paths:
        m = RESP_RE.search(str(p))
        if not m:
            raise DataError(f"{p}: not a results/responses/<dataset>/<generator>.parquet path")
        rewards[m["generator"]] = read_parquet(p, required=["id", "reward"])
    summaries: dict[tuple[str, str], dict[str, float]] = {}
    for p in scores_paths:
        m = SCORE_RE.search(str(p))
        if not m:
            raise DataError(f"{p}: not a results/scores/<dataset>/<generator>/<scorer>.parquet path")
        summaries[(m["generator"], m["scorer"])] = _scorer_summary(
            read_parquet(p, required=["loss_a_given_q", "loss_a", "n_a_tokens"]))
    ref = design["reference_model"]
    rows = []
    for g in design["generators"]:
        rw = rewards[g]
        ref_sum = summaries[(g, ref)]
        for b in design["bases"]:
            base_sum = summaries[(g, b)]
            rows.append({
                "generator": g, "base": b, "n": rw.height,
                "reward": _mean(rw["reward"]),
                "length": ref_sum["length"],
                "loss_base": base_sum["loss"], "ppl_base": base_sum["ppl"],
                "ifd_base": base_sum["ifd"],
                "loss_ref": ref_sum["loss"], "ppl_ref": ref_sum["ppl"], "ifd_ref": ref_sum["ifd"],
                "n_truncated_base": base_sum["n_truncated"],
            })
    df = pl.DataFrame(rows)
    write_parquet(df, out_path)
    return df


def compute_car(metrics_path: str | Path, out_csv: str | Path, car: dict[str, Any]) -> pl.DataFrame:
    from teachfit.scoring.metrics import car as car_fn

    df = read_parquet(metrics_path, required=["reward", "loss_base"])
    beta = float(car.get("beta", 1.0))
    offset = float(car.get("reward_offset", 0.0))
    values = []
    for row in df.iter_rows(named=True):
        try:
            values.append(car_fn(row["reward"], row["loss_base"], beta=beta, reward_offset=offset))
        except ValueError as exc:
            raise DataError(f"generator {row['generator']}, base {row['base']}: {exc}") from exc
    df = df.with_columns(pl.Series("car", values, dtype=pl.Float64),
                         pl.lit(beta).alias("car_beta"), pl.lit(offset).alias("car_reward_offset"))
    write_csv(df, out_csv)
    return df


def build_teacher_performance(eval_paths: list[str], out_csv: str | Path,
                              design: dict[str, Any], performance: dict[str, Any],
                              winrate_paths: list[str] = (),
                              winrate: dict[str, Any] | None = None) -> pl.DataFrame:
    metrics: dict[str, str] = performance.get("metrics", {})
    which = performance.get("checkpoint", "final")
    winrates: dict[tuple[str, str], dict[str, Any]] = {}
    for p in winrate_paths:
        m = WINRATE_RE.search(str(p))
        if not m:
            raise DataError(f"{p}: not a results/winrate/<dataset>/<generator>/<selection>/<base>.json path")
        winrates[(m["base"], m["generator"])] = json.loads(Path(p).read_text())
    rows = []
    for p in eval_paths:
        tidy = read_parquet(p, required=["task", "metric", "value", "base", "generator"])
        if which == "final":
            tidy = tidy.filter(pl.col("is_final"))
        elif "selected" in tidy.columns:
            tidy = tidy.filter(pl.col("selected"))
        row: dict[str, Any] = {"base": tidy["base"][0], "generator": tidy["generator"][0],
                               "step": int(tidy["step"].max())}
        for r in tidy.iter_rows(named=True):
            row[f"{r['task']}/{r['metric']}"] = r["value"]
        picked = []
        for task, metric in metrics.items():
            key = f"{task}/{metric}"
            if key not in row:
                raise DataError(f"{p}: no score for teacher.performance.metrics.{task} = {metric!r}; "
                                f"available: {sorted(k for k in row if '/' in k)}")
            picked.append(row[key])
        wr = winrates.get((row["base"], row["generator"]))
        if wr is not None:
            row["winrate"] = wr.get("win_rate")
            row["winrate_lc"] = wr.get("lc_win_rate")
            if performance.get("include_winrate"):
                lc = (winrate or {}).get("length_controlled", True) and row["winrate_lc"] is not None
                picked.append(row["winrate_lc"] if lc else row["winrate"])
        row["performance"] = float(np.mean(picked)) if picked else float("nan")
        rows.append(row)
    df = pl.DataFrame(rows).sort(["base", "generator"])
    write_csv(df, out_csv)
    return df


def correlate_teacher_metrics(metrics_csv: str | Path, performance_csv: str | Path,
                              out_csv: str | Path, metrics: list[str]) -> pl.DataFrame:
    from teachfit.correlate import correlation_table

    m = pl.read_csv(metrics_csv)
    p = pl.read_csv(performance_csv).select("base", "generator", "performance")
    df = m.join(p, on=["base", "generator"], how="inner", validate="1:1")
    table = correlation_table(df, group_col="base", x_cols=metrics, y_col="performance")
    write_csv(table, out_csv)
    return table


def plot_teacher_figures(metrics_csv: str | Path, performance_csv: str | Path,
                         correlations_csv: str | Path, heatmap: str, best: str,
                         scatter: list[str], metrics: list[str], style: dict[str, Any]) -> None:
    from teachfit import figures

    fs = figures.FigureStyle.from_dict(style)
    m = pl.read_csv(metrics_csv)
    p = pl.read_csv(performance_csv)
    corr = pl.read_csv(correlations_csv)
    avg = corr.filter(pl.col("base") == "average")
    df = m.join(p.select("base", "generator", "performance"), on=["base", "generator"])
    figures.heatmap(p, row="base", col="generator", value="performance",
                    path_stem=Path(heatmap).with_suffix(""),
                    title="Average performance after SFT", style=fs)
    best_rows = p.sort("performance", descending=True).group_by("base", maintain_order=True).first()
    figures.bar(best_rows.with_columns((pl.col("base") + ": " + pl.col("generator")).alias("label")),
                x="label", y="performance", path_stem=Path(best).with_suffix(""),
                title="Best response generator per base model", style=fs)
    # name the points while they stay readable (paper scale: 100 points, no names)
    many_bases = df["base"].n_unique() > 1
    df = df.with_columns((pl.col("base") + ": " + pl.col("generator") if many_bases
                          else pl.col("generator")).alias("point"))
    point_label = "point" if df.height <= 30 else None
    for metric, path in zip(metrics, scatter):
        rho = avg[f"{metric}_spearman"][0] if avg.height and f"{metric}_spearman" in avg.columns else float("nan")
        figures.scatter_with_rho(df, x=metric, y="performance", path_stem=Path(path).with_suffix(""),
                                 title=f"{metric} vs performance (avg Spearman rho = {rho:.2f})",
                                 style=fs, label=point_label)
