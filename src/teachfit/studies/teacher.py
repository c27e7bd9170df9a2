"""The teacher study (Xu et al. 2024, "Stronger Models are NOT Stronger Teachers"): one function
per rule of ``rules/teacher.smk``.

Conventions (also in docs/conventions.md):

* per-response losses are mean per-token NLLs (nats); a data set's L is the mean
  of its responses' L(A|Q) under the scorer in the CAR convention (``teacher.car.convention``,
  default ``chat``: the scorer's SFT chat template), truncated pairs left out and counted;
  PPL = exp(L);
* IFD per response = L(A|Q) / L(A) in the IFD convention (``teacher.ifd_convention``, default
  ``cherry``: Cherry_LLM's Alpaca prompt, 512-token window), averaged over responses;
* length = response tokens under the reference model's tokenizer (one tokenizer
  for every generator, so lengths are comparable);
* CAR = (mean reward + reward_offset) / (1 + beta * L_base), L_base the base
  model's mean L(A|Q) with the SFT chat template (paper Sec. 4, Eq. 3).
* RSR = mean clipped token rank / mean L(A|Q) under the base, ratio of means over responses
  (Yang et al. 2026, arXiv 2601.14249; lower = better; :func:`teachfit.scoring.metrics.dataset_rsr`).

Which generator / scorer / base a file belongs to arrives as rule params aligned with the
inputs (``generators``, ``score_keys``, ``winrate_runs``); paths are never parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit import figures
from teachfit.correlate import correlation_table
from teachfit.io import DataError, read_json, read_parquet, write_csv, write_parquet
from teachfit.scoring.metrics import car as car_fn
from teachfit.scoring.metrics import dataset_rsr, ifd
from teachfit.studies.ifs.intervals import normal_diff_interval

log = logging.getLogger(__name__)

DATA_METRIC_COLUMNS = ("generator", "base", "n", "reward", "length", "loss_base", "ppl_base", "ifd_base",
                       "loss_ref", "ppl_ref", "ifd_ref", "rank_base", "rsr_base", "n_truncated_base", "n_truncated_ref",
                       "n_truncated_ifd_base", "n_no_ifd_base", "n_truncated_ifd_ref", "n_no_ifd_ref",
                       "loss_convention", "ifd_convention")


def _aligned(paths: Sequence[str], meta: Sequence[Any], what: str, meta_name: str) -> None:
    if len(paths) != len(meta):
        raise ValueError(f"{len(paths)} {what} files but {len(meta)} entries in params {meta_name}; "
                         "the rule must pass them aligned")


def _mean(values: pl.Series) -> float:
    arr = values.drop_nulls().to_numpy().astype(float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _loss_summary(scores: pl.DataFrame) -> dict[str, float]:
    """Mean L(A|Q) (nats) and its exp over the responses scored in full (finite L(A|Q), not
    truncated: a truncated pair's loss covers only the start of its response, so it is left
    out of L and counted in ``n_truncated``), and the mean response length in tokens
    (``n_response_tokens``, before truncation) over the non-empty responses."""
    truncated = scores["truncated"].fill_null(False)
    valid = scores.filter(pl.col("loss_a_given_q").is_not_nan() & ~truncated)
    loss = _mean(valid["loss_a_given_q"])
    nonempty = scores.filter(~pl.col("empty_response").fill_null(False))
    rank = rsr = float("nan")
    if "mean_rank_clip_a_given_q" in valid.columns:
        rank = _mean(valid["mean_rank_clip_a_given_q"])
        rsr = dataset_rsr(valid["mean_rank_clip_a_given_q"].to_numpy(), valid["loss_a_given_q"].to_numpy())
    return {
        "loss": loss,
        "rank": rank,
        "rsr": rsr,
        "ppl": float(np.exp(loss)),
        "length": _mean(nonempty["n_response_tokens"].cast(pl.Float64)),
        "n_truncated": int(truncated.sum()),
    }


def _ifd_summary(scores: pl.DataFrame) -> dict[str, float]:
    """Mean over responses of IFD = L(A|Q) / L(A) where it is defined; ``n_no_ifd`` responses
    have none (empty response, or a prompt filling the convention's window: NaN losses);
    ``n_truncated`` responses with an IFD were scored over a truncated window (kept, as Cherry_LLM
    keeps them)."""
    per = ifd(scores["loss_a_given_q"].to_numpy(), scores["loss_a"].to_numpy())
    ok = np.isfinite(per)
    truncated = scores["truncated"].fill_null(False).to_numpy()
    return {
        "ifd": float(per[ok].mean()) if ok.any() else float("nan"),
        "n_truncated": int((truncated & ok).sum()),
        "n_no_ifd": int((~ok).sum()),
    }


def compute_data_metrics(responses: list[str], scores: list[str], metrics: str | Path,
                         generators: list[str], score_keys: list[Mapping[str, str]],
                         bases: list[str], reference_model: str,
                         conventions: Mapping[str, str]) -> pl.DataFrame:
    """Data metrics per (generator, base) of the teacher study; rule ``compute_data_metrics``.

    Inputs: ``responses[i]`` (Parquet ``id``, ``reward``: generator ``generators[i]``'s kept
    responses and their rewards) and ``scores[j]`` (Parquet ``loss_a_given_q``, ``loss_a`` (nats),
    ``n_response_tokens``, ``truncated``, ``empty_response``: generator
    ``score_keys[j]["generator"]``'s responses scored by model ``score_keys[j]["scorer"]`` under
    convention ``score_keys[j]["convention"]``, see :mod:`teachfit.scoring.losses`).
    ``conventions``: ``{"car": ..., "ifd": ...}`` (``teacher.car.convention``,
    ``teacher.ifd_convention``).

    Writes ``metrics`` (Parquet), one row per generator (in ``generators`` order) and base (in
    ``bases`` order), columns :data:`DATA_METRIC_COLUMNS`:

    * ``n``: responses; ``reward``: mean finite reward;
    * ``length``: mean response tokens under ``reference_model``'s tokenizer (before truncation);
    * ``loss_base`` / ``loss_ref``: mean L(A|Q) (nats) under the base / reference model in the
      CAR convention (default ``chat``: the model's SFT chat template); ``loss_base`` is CAR's L;
      ``ppl_*`` = exp of that mean (not a mean of PPLs). Pairs truncated at that convention's
      window are left out and counted in ``n_truncated_base`` / ``n_truncated_ref``;
    * ``ifd_base`` / ``ifd_ref``: mean over responses of L(A|Q) / L(A) in the IFD convention
      (default ``cherry``: Cherry_LLM's Alpaca prompt and 512-token window);
      ``n_truncated_ifd_*`` of them were scored over a cut response (kept, as Cherry does),
      ``n_no_ifd_*`` responses have no IFD (empty, or the prompt fills the window);
    * ``rank_base``: mean over those responses of the mean token rank clipped at 100 under the
      base; ``rsr_base``: the Rank-Surprisal Ratio of the generator's data for the base, ratio of
      means ``mean rank_clip / mean L(A|Q)`` (:func:`teachfit.scoring.metrics.dataset_rsr`;
      lower = better; Yang et al. 2026). NaN when the scores file predates the rank columns;
    * ``loss_convention`` / ``ifd_convention``: the conventions used.

    CAR is added by :func:`compute_car`. Raises ``ValueError`` when params and inputs are not
    aligned, :class:`DataError` when a (generator, scorer, convention) the design needs has no
    scores file or a file lacks a column.
    """
    _aligned(responses, generators, "responses", "generators")
    _aligned(scores, score_keys, "scores", "score_keys")
    rewards: dict[str, pl.DataFrame] = {
        g: read_parquet(p, required=["id", "reward"]) for g, p in zip(generators, responses)}
    tables: dict[tuple[str, str, str], pl.DataFrame] = {
        (key["generator"], key["scorer"], key["convention"]): read_parquet(
            p, required=["loss_a_given_q", "loss_a", "n_response_tokens", "truncated", "empty_response"])
        for key, p in zip(score_keys, scores)}

    def table(generator: str, scorer: str, convention: str) -> pl.DataFrame:
        if (generator, scorer, convention) not in tables:
            raise DataError(f"compute_data_metrics: no scores of generator {generator!r} under scorer "
                            f"{scorer!r} and convention {convention!r}; scored: {sorted(tables)}")
        return tables[(generator, scorer, convention)]

    car_conv, ifd_conv = conventions["car"], conventions["ifd"]
    rows = []
    for g in generators:
        rw = rewards[g]
        ref_loss = _loss_summary(table(g, reference_model, car_conv))
        ref_ifd = _ifd_summary(table(g, reference_model, ifd_conv))
        for b in bases:
            base_loss = _loss_summary(table(g, b, car_conv))
            base_ifd = _ifd_summary(table(g, b, ifd_conv))
            rows.append({
                "generator": g, "base": b, "n": rw.height,
                "reward": _mean(rw["reward"]),
                "length": ref_loss["length"],
                "loss_base": base_loss["loss"], "ppl_base": base_loss["ppl"], "ifd_base": base_ifd["ifd"],
                "loss_ref": ref_loss["loss"], "ppl_ref": ref_loss["ppl"], "ifd_ref": ref_ifd["ifd"],
                "rank_base": base_loss["rank"], "rsr_base": base_loss["rsr"],
                "n_truncated_base": base_loss["n_truncated"], "n_truncated_ref": ref_loss["n_truncated"],
                "n_truncated_ifd_base": base_ifd["n_truncated"], "n_no_ifd_base": base_ifd["n_no_ifd"],
                "n_truncated_ifd_ref": ref_ifd["n_truncated"], "n_no_ifd_ref": ref_ifd["n_no_ifd"],
                "loss_convention": car_conv, "ifd_convention": ifd_conv,
            })
    df = pl.DataFrame(rows).select(DATA_METRIC_COLUMNS)
    write_parquet(df, metrics)
    return df


def compute_car(metrics: str | Path, table: str | Path, car: Mapping[str, Any]) -> pl.DataFrame:
    """Add CAR = (reward + reward_offset) / (1 + beta * loss_base) to the data metrics; rule
    ``compute_car``.

    ``metrics`` is :func:`compute_data_metrics`'s Parquet; ``car`` the ``teacher.car`` config
    (``beta``, ``reward_offset``). Writes ``table`` (CSV): the metrics plus ``car``,
    ``car_beta`` and ``car_reward_offset``. Raises :class:`DataError` naming the generator and
    base when a mean reward + offset is not positive (:func:`teachfit.scoring.metrics.car`).
    """
    df = read_parquet(metrics, required=["generator", "base", "reward", "loss_base"])
    beta = float(car["beta"])
    offset = float(car["reward_offset"])
    values = []
    for row in df.iter_rows(named=True):
        try:
            values.append(car_fn(row["reward"], row["loss_base"], beta=beta, reward_offset=offset))
        except ValueError as exc:
            raise DataError(f"generator {row['generator']}, base {row['base']}: {exc}") from exc
    df = df.with_columns(pl.Series("car", values, dtype=pl.Float64),
                         pl.lit(beta).alias("car_beta"), pl.lit(offset).alias("car_reward_offset"))
    write_csv(df, table)
    return df


WINRATE_COLUMNS = (("win_rate", "winrate"), ("lc_win_rate_minimal_inhouse", "winrate_lc_minimal_inhouse"),
                   ("lc_win_rate_alpaca_eval", "winrate_lc_alpaca_eval"))


#: The standard-error key of each win-rate headline in a win-rate summary JSON
#: (:mod:`teachfit.evaluation.winrate`, :mod:`teachfit.evaluation.alpaca_eval2`).
HEADLINE_STDERR = {"win_rate": "stderr", "lc_win_rate_minimal_inhouse": "lc_stderr_minimal_inhouse",
                   "lc_win_rate_alpaca_eval": "lc_stderr_alpaca_eval"}


def add_mixed_margins(df: pl.DataFrame, mixed: Sequence[str]) -> pl.DataFrame:
    """Whether each mixed (``per_instruction``) teacher beat every single teacher, per base.

    ``df`` has ``base``, ``generator``, ``performance`` and ``performance_stderr``; ``mixed`` names
    the mixed generators. Adds ``mixed`` (bool), and for mixed rows ``margin_vs_best_single`` =
    performance - the best single (non-mixed) generator's performance of that base,
    ``margin_low`` / ``margin_high`` (95 % normal interval of that difference from the two
    standard errors, :func:`teachfit.studies.ifs.intervals.normal_diff_interval`; NaN when a
    standard error is missing, e.g. a win rate counts) and ``beats_every_single`` (margin > 0;
    the interval says whether that is more than noise); null for single teachers.
    """
    rows = []
    for r in df.iter_rows(named=True):
        out = {"mixed": r["generator"] in mixed, "margin_vs_best_single": None, "margin_low": None,
               "margin_high": None, "beats_every_single": None}
        singles = df.filter((pl.col("base") == r["base"]) & ~pl.col("generator").is_in(list(mixed))
                            & pl.col("performance").is_not_nan())
        if out["mixed"] and singles.height:
            best = singles.sort("performance", descending=True).row(0, named=True)
            margin = float(r["performance"]) - float(best["performance"])
            lo, hi = normal_diff_interval(margin, r["performance_stderr"], best["performance_stderr"])
            out.update(margin_vs_best_single=margin, margin_low=lo, margin_high=hi,
                       beats_every_single=bool(margin > 0) if np.isfinite(margin) else None)
        rows.append(out)
    schema = {"mixed": pl.Boolean, "margin_vs_best_single": pl.Float64, "margin_low": pl.Float64,
              "margin_high": pl.Float64, "beats_every_single": pl.Boolean}
    return df.hstack(pl.DataFrame(rows, schema=schema))


def build_teacher_performance(evals: list[str], winrates: list[str], table: str | Path,
                              winrate_runs: list[Mapping[str, str]], performance: Mapping[str, Any],
                              mixed: Sequence[str] = ()) -> pl.DataFrame:
    """Benchmark scores per (base, generator) and their average; rule ``build_teacher_performance``.

    ``evals`` are the tidy lm-eval tables of the runs (one per run; columns ``base``,
    ``generator``, ``step``, ``task``, ``metric``, ``value``, ``is_final``, see
    :func:`teachfit.evaluation.lm_eval.evaluate_checkpoints`); ``winrates[i]`` the win-rate
    summary JSON (:func:`teachfit.evaluation.winrate.judge_winrate`, or
    :func:`teachfit.evaluation.alpaca_eval2.alpaca_eval_lc` for AlpacaEval's LC) of run
    ``winrate_runs[i]`` = ``{base, generator, benchmark, headline}`` (``headline``: the summary key
    that counts, :func:`teachfit.evaluation.winrate.headline_key`). ``performance`` is the
    top-level ``performance`` config: ``metrics`` (task -> lm-eval metric key), ``teacher_metrics``
    (the same for this study only; null = ``metrics``; ``{}`` = no lm-eval score counts),
    ``checkpoint`` (``final``, or ``selected``: the IFS-selected checkpoint, which needs
    ``eval.checkpoints: final_and_selected``) and ``include_winrate``.

    Writes ``table`` (CSV), one row per run sorted by base, generator: ``step``, one column per
    ``task/metric`` of that checkpoint, per benchmark ``<benchmark>/winrate`` (the raw win rate:
    AlpacaEval's, Arena-Hard's or the pairwise one), ``<benchmark>/winrate_lc_minimal_inhouse``
    (the in-house fit, when computed) and ``<benchmark>/winrate_lc_alpaca_eval`` (AlpacaEval 2's
    LC, when computed), all fractions in [0, 1], and ``performance`` = the mean of the teacher's
    lm-eval metrics plus, with ``include_winrate``, each benchmark's headline (the CAR paper:
    the mean of AlpacaEval 2 LC and Arena-Hard). NaN when nothing counts.
    ``performance_stderr``: ``sqrt(sum se_i^2) / k`` over the ``k`` averaged scores (lm-eval's
    and win rates' standard errors (:data:`HEADLINE_STDERR`), taken as independent; NaN when one
    has none). ``mixed``:
    the per_instruction generators of the study; :func:`add_mixed_margins` adds whether each beat
    every single teacher, with a 95 % interval of its margin. Raises
    :class:`DataError` naming the file when a configured metric or a headline key is missing.
    """
    _aligned(winrates, winrate_runs, "winrates", "winrate_runs")
    metric_keys: Mapping[str, str] = (performance["teacher_metrics"] if performance["teacher_metrics"] is not None
                                      else performance["metrics"])
    which = performance["checkpoint"]
    by_run: dict[tuple[str, str], list[tuple[Mapping[str, str], str, dict[str, Any]]]] = {}
    for run, p in zip(winrate_runs, winrates):
        by_run.setdefault((run["base"], run["generator"]), []).append((run, p, read_json(p)))
    rows = []
    for p in evals:
        tidy = read_parquet(p, required=["task", "metric", "value", "base", "generator", "step", "is_final"])
        if which == "final":
            tidy = tidy.filter(pl.col("is_final"))
        else:
            if "selected" not in tidy.columns:
                raise DataError(f"{p}: performance.checkpoint = 'selected' needs the IFS-selected "
                                "checkpoint's scores (eval.checkpoints: final_and_selected)")
            tidy = tidy.filter(pl.col("selected"))
        row: dict[str, Any] = {"base": tidy["base"][0], "generator": tidy["generator"][0],
                               "step": int(tidy["step"].max())}
        for r in tidy.iter_rows(named=True):
            row[f"{r['task']}/{r['metric']}"] = r["value"]
        stderrs = {f"{r['task']}/{r['metric']}": r.get("stderr") for r in tidy.iter_rows(named=True)}
        picked, picked_se = [], []
        for task, metric in metric_keys.items():
            key = f"{task}/{metric}"
            if key not in row:
                raise DataError(f"{p}: no score for performance.metrics.{task} = {metric!r}; "
                                f"available: {sorted(k for k in row if '/' in k)}")
            picked.append(row[key])
            picked_se.append(stderrs.get(key))
        for run, path, wr in by_run.get((row["base"], row["generator"]), []):
            for key, column in WINRATE_COLUMNS:
                if key in wr:
                    row[f"{run['benchmark']}/{column}"] = wr[key]
            if performance["include_winrate"]:
                if run["headline"] not in wr:
                    raise DataError(f"{path}: benchmark {run['benchmark']!r} has no {run['headline']!r} "
                                    f"(its length_controlled setting); has {sorted(wr)}")
                picked.append(wr[run["headline"]])
                picked_se.append(wr.get(HEADLINE_STDERR.get(run["headline"], "")))
        row["performance"] = float(np.mean(picked)) if picked else float("nan")
        se = np.array([np.nan if v is None else float(v) for v in picked_se], dtype=float)
        row["performance_stderr"] = float(np.sqrt(np.sum(se ** 2)) / se.size) if se.size else float("nan")
        rows.append(row)
    df = add_mixed_margins(pl.DataFrame(rows).sort(["base", "generator"]), mixed)
    write_csv(df, table)
    return df


def correlate_teacher_metrics(data_metrics: str | Path, performance: str | Path, table: str | Path,
                              metrics: list[str]) -> pl.DataFrame:
    """Spearman and Kendall correlation of each data metric with performance, per base and
    averaged; rule ``correlate_teacher_metrics`` (paper Sec. 5, Table 3).

    ``data_metrics`` is :func:`compute_car`'s CSV, ``performance`` :func:`build_teacher_performance`'s;
    they are joined 1:1 on (base, generator). ``metrics`` names the columns to correlate. Writes
    ``table`` (CSV, :func:`teachfit.correlate.correlation_table`: one row per base plus ``average``).
    """
    m = pl.read_csv(data_metrics)
    p = pl.read_csv(performance).select("base", "generator", "performance")
    df = m.join(p, on=["base", "generator"], how="inner", validate="1:1")
    out = correlation_table(df, group_col="base", x_cols=metrics, y_col="performance")
    write_csv(out, table)
    return out


def plot_teacher_figures(data_metrics: str | Path, performance: str | Path, correlations: str | Path,
                         heatmap: str, best: str, scatter: list[str], metrics: list[str],
                         style: Mapping[str, Any]) -> None:
    """Teacher-study figures; rule ``plot_teacher_figures``.

    ``heatmap``: performance per (base, generator); ``best``: the best generator per base;
    ``scatter[i]``: data metric ``metrics[i]`` against performance, titled with the average
    Spearman rho from ``correlations``. ``style`` is ``analysis.figures``
    (:class:`teachfit.figures.FigureStyle`). Each figure's extension comes from its path.
    """
    _aligned(scatter, metrics, "scatter", "metrics")
    fs = figures.FigureStyle.from_dict(style)
    m = pl.read_csv(data_metrics)
    p = pl.read_csv(performance)
    corr = pl.read_csv(correlations)
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
