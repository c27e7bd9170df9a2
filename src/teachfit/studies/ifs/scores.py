"""IFS / IFS_partial / IFS_full and ObjecQA with 95% intervals, the IFS-plateau early-stopping rule,
and rules ``select_checkpoint``, ``build_ifs_tables``, ``plot_ifs_curve`` (AlShikh et al. 2023).

IFS = share of responses the tone classifier labels answer-like (:func:`ifs_scores`); ObjecQA =
share of answers the judge labels objective (:func:`objecqa_scores`, raw and calibrated judge).
Every share carries its 95% Wilson interval (:mod:`teachfit.studies.ifs.intervals`). A run's curve
over its checkpoints and the plateau choice are computed in one place, :func:`ifs_curve`; the
plateau rule itself is :func:`select_plateau_checkpoint`; the early-stopping table
(:func:`early_stopping_row`) compares the selected with the final checkpoint.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit import figures
from teachfit.io import (
    DataError,
    read_parquet,
    require_columns,
    write_csv,
    write_json,
    write_parquet,
)
from teachfit.settings import from_dict as settings_from_dict
from teachfit.studies.ifs.intervals import (
    BOOTSTRAP_RESAMPLES,
    Z95,
    half_width,
    normal_diff_interval,
    paired_bootstrap,
    percentile_interval,
    share_interval,
)

log = logging.getLogger(__name__)


IFS_VARIANTS = ("full", "partial")
#: the share columns of a curve / table that carry ``<name>_lo`` and ``<name>_hi`` (95% Wilson)
SHARE_COLUMNS = ("ifs", "ifs_partial", "ifs_full", "objecqa", "objecqa_raw")


def _with_interval(name: str, flags: Sequence[int | bool]) -> dict[str, float]:
    share, lo, hi, _ = share_interval(flags)
    return {name: share, f"{name}_lo": lo, f"{name}_hi": hi}


def ifs_scores(df: pl.DataFrame) -> dict[str, float | int]:
    """IFS = share of responses classified answer-like (label 1), with 95% Wilson intervals.

    ``ifs`` over all rows, ``ifs_partial`` / ``ifs_full`` over rows with ``variant`` partial /
    full; each with ``<name>_lo`` / ``<name>_hi`` (:func:`teachfit.studies.ifs.intervals.wilson_interval`);
    a share over zero rows is NaN (interval NaN too). Labels must be 0/1 (no nulls), else
    :class:`DataError`. Returns ``{ifs, ifs_lo, ifs_hi, ifs_partial, ..., ifs_full_hi, n,
    n_partial, n_full}``. Source: AlShikh et al. 2023, IFS = answer-like responses / all responses.
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
    return {
        **_with_interval("ifs", y),
        **_with_interval("ifs_partial", y[v == "partial"]),
        **_with_interval("ifs_full", y[v == "full"]),
        "n": len(y),
        "n_partial": int((v == "partial").sum()),
        "n_full": int((v == "full").sum()),
    }


def objecqa_scores(df: pl.DataFrame) -> dict[str, float | int]:
    """ObjecQA = share of answers judged objective, calibrated and raw, with 95% Wilson intervals.

    ``df``: ObjecQA rows of a ``score_ifs`` table, with ``judge_label`` (the calibrated judge)
    and ``judge_label_raw`` (the uncalibrated one), each ``"objective"`` or ``"subjective"``
    (else :class:`DataError`). Returns ``{objecqa, objecqa_lo, objecqa_hi, objecqa_raw,
    objecqa_raw_lo, objecqa_raw_hi, n_objecqa}``; no rows give NaN shares and ``n_objecqa = 0``.
    """
    require_columns(df, ["judge_label", "judge_label_raw"], "ObjecQA scores")
    out: dict[str, float | int] = {}
    for name, col in (("objecqa", "judge_label"), ("objecqa_raw", "judge_label_raw")):
        labels = df[col].to_list()
        bad = sorted({str(x) for x in labels if x not in ("objective", "subjective")})
        if bad:
            raise DataError(f"ObjecQA scores: column {col!r} has label(s) {bad}; allowed: objective, subjective")
        out.update(_with_interval(name, [x == "objective" for x in labels]))
    out["n_objecqa"] = df.height
    return out


def ifs_table(df: pl.DataFrame, by: Sequence[str] = ("model", "fmt")) -> pl.DataFrame:
    """:func:`ifs_scores` per group (e.g. per model and prompt format), sorted by ``by``."""
    by = list(by)
    require_columns(df, [*by, "variant", "label"], "IFS responses")
    rows = []
    for key, group in df.group_by(by, maintain_order=True):
        rows.append({**dict(zip(by, key)), **ifs_scores(group)})
    return pl.DataFrame(rows).sort(by)


# =========================================================================== plateau rule


@dataclass(frozen=True)
class PlateauChoice:
    """The checkpoint chosen by :func:`select_plateau_checkpoint`.

    ``tolerance``: the tolerance the chosen checkpoint was judged with; ``best_later``: the
    highest IFS after it (NaN for the last checkpoint).
    """

    index: int
    step: int
    ifs: float
    plateau_found: bool
    tolerance: float
    best_later: float


@dataclass
class PlateauSettings:
    """The plateau rule of :func:`select_plateau_checkpoint` (config ``ifs.early_stopping``).

    No field has a default: the config schema holds them (``defaults("ifs.early_stopping")``).
    """

    epsilon: float = field(metadata={"help": "least tolerance: a checkpoint is on the plateau when no later "
                                             "checkpoint's IFS exceeds its own by more than "
                                             "max(epsilon, its 95% interval half-width)"})
    min_later: int = field(metadata={"help": "later checkpoints a candidate must be compared with (fewer: "
                                             "it cannot be selected)"})

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"plateau.epsilon: must be > 0, got {self.epsilon}")
        if int(self.min_later) < 1:
            raise ValueError(f"plateau.min_later: must be >= 1, got {self.min_later}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PlateauSettings:
        return settings_from_dict(cls, d, "plateau")


def plateau_tolerances(ifs: Sequence[float], half_widths: Sequence[float], epsilon: float) -> np.ndarray:
    """Per checkpoint ``max(epsilon, half_width)``; a NaN half-width counts as 0 (epsilon rules)."""
    hw = np.nan_to_num(np.asarray(half_widths, dtype=np.float64), nan=0.0)
    if hw.shape != (len(ifs),):
        raise ValueError(f"plateau: {len(ifs)} IFS values but {hw.shape[0]} half-widths")
    return np.maximum(float(epsilon), hw)


def select_plateau_checkpoint(
    steps: Sequence[int], ifs: Sequence[float], half_widths: Sequence[float], epsilon: float,
    min_later: int,
) -> PlateauChoice:
    """Early stopping by IFS plateau: the first checkpoint no later checkpoint clearly beats.

    Rule: drop checkpoints whose IFS is NaN; on the rest, in step order, select the first
    checkpoint ``i`` that has at least ``min_later`` later checkpoints and whose IFS is within
    its tolerance of the best later IFS::

        max(IFS[i+1:]) - IFS[i] <= tolerance[i] = max(epsilon, half_width[i])

    where ``half_width[i]`` is half the width of checkpoint i's 95% interval (Wilson, over its
    IFS prompts). If no checkpoint qualifies (the curve still rises by more than the noise at
    every candidate), the last valid checkpoint is returned with ``plateau_found=False``.

    Why this rule (the IFS paper states no formal criterion; it reports that IFS "stabilize[s]"
    after about 8k examples and suggests early stopping, AlShikh et al. 2023, Sec. 5):

    * It compares with the **best later value**, not the next one, so a noisy dip right after a
      checkpoint cannot make it look flat (the failure of the former rule ``max(IFS[i+1..i+k]) -
      IFS[i] < epsilon``: with 8 prompts a 0.5 → 0.0 jump stopped a run at step 2 of 12).
    * The tolerance is at least the **interval half-width**, so differences the prompt set cannot
      resolve (a later value inside the candidate's own 95% interval) do not count as progress;
      ``epsilon`` only sets a floor for very precise curves.
    * A candidate needs ``min_later`` later checkpoints to be judged against.

    ``steps`` must be strictly increasing; ``epsilon > 0``, ``min_later >= 1``; ``half_widths``
    aligned with ``ifs``. The returned ``index`` points into the original (NaN-including) lists.
    All-NaN input raises ``ValueError``.
    """
    if len(steps) != len(ifs):
        raise ValueError(f"plateau: {len(steps)} steps but {len(ifs)} IFS values")
    if not len(steps):
        raise ValueError("plateau: no checkpoints")
    if not epsilon > 0:
        raise ValueError(f"plateau: epsilon must be > 0, got {epsilon}")
    if int(min_later) < 1:
        raise ValueError(f"plateau: min_later must be >= 1, got {min_later}")
    st = [int(s) for s in steps]
    if any(b <= a for a, b in itertools.pairwise(st)):
        raise ValueError(f"plateau: steps must be strictly increasing, got {st}")
    vals = np.asarray(ifs, dtype=np.float64)
    tol = plateau_tolerances(vals, half_widths, epsilon)
    valid = [i for i in range(len(vals)) if not np.isnan(vals[i])]
    if not valid:
        raise ValueError("plateau: every IFS value is NaN")
    v = vals[valid]
    for j in range(len(v) - int(min_later)):
        best = float(v[j + 1:].max())
        i = valid[j]
        if best - float(v[j]) <= float(tol[i]):
            return PlateauChoice(index=i, step=st[i], ifs=float(vals[i]), plateau_found=True,
                                 tolerance=float(tol[i]), best_later=best)
    i = valid[-1]
    return PlateauChoice(index=i, step=st[i], ifs=float(vals[i]), plateau_found=False,
                         tolerance=float(tol[i]), best_later=float("nan"))


# =========================================================================== curves


def _at_step(log_df: pl.DataFrame, column: str, step: int) -> float:
    """The last non-null ``column`` value logged at or before ``step`` (NaN when none)."""
    if column not in log_df.columns:
        return float("nan")
    prior = log_df.filter(pl.col(column).is_not_null() & (pl.col("step") <= step))
    return float(prior.sort("step")[column][-1]) if prior.height else float("nan")


def ifs_curve(scores: pl.DataFrame, train_log: pl.DataFrame,
              settings: PlateauSettings | Mapping[str, Any]) -> tuple[pl.DataFrame, PlateauChoice]:
    """One SFT run's IFS / ObjecQA curve over its checkpoints and the plateau-selected checkpoint.

    ``scores``: the run's ``score_ifs`` table (columns ``checkpoint``, ``step``,
    ``examples_seen``, ``task``; ``variant`` and ``label`` on ``task == "ifs"`` rows,
    ``judge_label`` and ``judge_label_raw`` on ``task == "objecqa"`` rows). ``train_log``: the
    run's ``train_log.parquet`` (``step``, ``loss``, ``num_tokens``; nulls allowed).
    ``settings``: config ``ifs.early_stopping``.

    Returns ``(curve, choice)``: one row per checkpoint, sorted by step, columns ``checkpoint,
    step, examples_seen, num_tokens`` (training tokens seen by the checkpoint: trl's cumulative
    ``num_tokens`` at the last logged step at or before it; NaN when the log has none), the
    :func:`ifs_scores` columns, the :func:`objecqa_scores` columns (NaN without ObjecQA rows),
    ``train_loss`` (the last logged training loss at or before the checkpoint's step, nats per
    token), ``tolerance`` and ``best_later_ifs`` (the plateau rule's quantities per checkpoint,
    see :func:`select_plateau_checkpoint`; ``best_later_ifs`` is NaN on the last),
    ``selected`` (True on the one row the rule picks) and ``plateau_found`` (the rule's flag, the
    same on every row). Two checkpoints at one step raise
    :class:`DataError`. Source: AlShikh et al. 2023 (IFS plateau as an early-stopping criterion).
    """
    s = settings if isinstance(settings, PlateauSettings) else PlateauSettings.from_dict(settings)
    require_columns(scores, ["checkpoint", "step", "examples_seen", "task"], "IFS scores")
    require_columns(train_log, ["step"], "SFT train log")
    rows = []
    empty_obj = pl.DataFrame(schema={"judge_label": pl.String, "judge_label_raw": pl.String})
    for (ck,), g in scores.group_by(["checkpoint"], maintain_order=True):
        obj = g.filter(pl.col("task") == "objecqa")
        step = int(g["step"][0])
        rows.append({"checkpoint": ck, "step": step, "examples_seen": int(g["examples_seen"][0]),
                     "num_tokens": _at_step(train_log, "num_tokens", step),
                     **ifs_scores(g.filter(pl.col("task") == "ifs")),
                     **objecqa_scores(obj if obj.height else empty_obj)})
    curve = pl.DataFrame(rows).sort("step")
    if curve["step"].n_unique() != curve.height:
        dup = curve.filter(pl.col("step").is_duplicated())
        raise DataError(f"IFS scores: checkpoints {sorted(dup['checkpoint'].to_list())} share a step "
                        f"({sorted(set(dup['step'].to_list()))})")
    if curve["num_tokens"].is_nan().any():
        log.warning("SFT train log has no num_tokens at or before steps %s: tokens seen are NaN there",
                    curve.filter(pl.col("num_tokens").is_nan())["step"].to_list())
    steps = curve["step"].to_list()
    vals = curve["ifs"].to_list()
    hws = [half_width(lo, hi) for lo, hi in zip(curve["ifs_lo"].to_list(), curve["ifs_hi"].to_list())]
    choice = select_plateau_checkpoint(steps, vals, hws, s.epsilon, s.min_later)
    tol = plateau_tolerances(vals, hws, s.epsilon)
    arr = np.asarray(vals, dtype=np.float64)
    best_later = [float(np.nanmax(arr[i + 1:])) if i + 1 < len(arr) and not np.isnan(arr[i + 1:]).all()
                  else float("nan") for i in range(len(arr))]
    curve = curve.with_columns(
        pl.Series("train_loss", [_at_step(train_log, "loss", st) for st in steps], dtype=pl.Float64),
        pl.Series("tolerance", tol.tolist(), dtype=pl.Float64),
        pl.Series("best_later_ifs", best_later, dtype=pl.Float64),
        pl.Series("selected", [i == choice.index for i in range(curve.height)]),
        pl.lit(choice.plateau_found).alias("plateau_found"),
    )
    return curve, choice


def select_checkpoint(scores: str | Path, train_log: str | Path, selected: str | Path,
                      curve: str | Path, early_stopping: Mapping[str, Any],
                      run: Mapping[str, str]) -> dict[str, Any]:
    """Rule ``select_checkpoint``: a run's IFS curve and its plateau-selected checkpoint.

    ``scores`` / ``train_log``: see :func:`ifs_curve`; ``early_stopping`` = config
    ``ifs.early_stopping``; ``run``: the run's ``{dataset, generator, selection, base}``,
    added as columns. Writes the curve (Parquet) to ``curve`` and ``{step, checkpoint,
    plateau_found, ifs, tolerance, best_later_ifs, epsilon, min_later, dataset, generator,
    selection, base}`` to ``selected`` (JSON, read by the ``final_and_selected`` evaluation);
    returns that dict.
    """
    s = PlateauSettings.from_dict(early_stopping)
    table, choice = ifs_curve(read_parquet(scores), read_parquet(train_log), s)
    table = table.with_columns(*[pl.lit(v).alias(k) for k, v in run.items()])
    idx = choice.index
    sel = {"step": int(table["step"][idx]), "checkpoint": table["checkpoint"][idx],
           "plateau_found": bool(choice.plateau_found), "ifs": choice.ifs,
           "tolerance": choice.tolerance,
           "best_later_ifs": None if math.isnan(choice.best_later) else choice.best_later,
           "epsilon": float(s.epsilon), "min_later": int(s.min_later), **run}
    write_parquet(table, curve)
    write_json(sel, selected)
    log.info("run %s: selected step %d of %s (plateau found: %s)", "/".join(run.values()), sel["step"],
             table["step"].to_list(), sel["plateau_found"])
    return sel


# =========================================================================== early stopping


def _sample_values(samples_jsonl: str | Path, task: str, metric: str) -> dict[Any, tuple[float, float]]:
    """Per document ``(sum, count)`` of one lm-eval metric (``<name>,<filter>``) from a per-sample
    JSONL written by :func:`teachfit.evaluation.lm_eval.evaluate_checkpoints`: a scalar / bool is
    ``(value, 1)``, a list (``inst_level_*``) ``(sum(list), len(list))``. Empty when the file has no
    row for that task, filter and metric name."""
    name, _, filt = metric.partition(",")
    out: dict[Any, tuple[float, float]] = {}
    path = Path(samples_jsonl)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("task") != task or rec.get("filter") != filt or name not in rec:
                continue
            val = rec[name]
            if isinstance(val, list):
                out[rec["doc_id"]] = (float(sum(float(x) for x in val)), float(len(val)))
            elif isinstance(val, (bool, int, float)):
                out[rec["doc_id"]] = (float(val), 1.0)
            else:
                raise DataError(f"{path}:{lineno}: {task} {name!r} is {type(val).__name__}, not a number "
                                "or list of numbers")
    return out


def _metric_value(tidy: pl.DataFrame, step: int, task: str, metric: str) -> tuple[float, float]:
    """(value, stderr) of one task/metric at one step of a tidy eval table; NaNs when absent."""
    hit = tidy.filter((pl.col("step") == step) & (pl.col("task") == task) & (pl.col("metric") == metric))
    if not hit.height:
        return float("nan"), float("nan")
    se = hit["stderr"][0] if "stderr" in hit.columns else None
    return float(hit["value"][0]), float("nan") if se is None else float(se)


def _performance_diff(tidy: pl.DataFrame, eval_dir: str | Path, sel_step: int, final_step: int,
                      metrics: Mapping[str, str], rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    """Selected / final values of every performance metric, their difference (selected - final)
    and its 95% interval, plus the average over metrics; see :func:`early_stopping_row`."""
    row: dict[str, Any] = {}
    draws: dict[str, np.ndarray | None] = {}
    ses: dict[str, float] = {}
    methods: dict[str, str] = {}
    for task, metric in metrics.items():
        key = f"{task}/{metric}"
        sv, sse = _metric_value(tidy, sel_step, task, metric)
        fv, fse = _metric_value(tidy, final_step, task, metric)
        diff = sv - fv
        row.update({f"selected:{key}": sv, f"final:{key}": fv, f"diff:{key}": diff})
        draws[key], lo, hi = None, float("nan"), float("nan")
        if math.isnan(diff):
            methods[key] = "not_evaluated"
        elif sel_step == final_step:
            methods[key], lo, hi, ses[key] = "same_checkpoint", 0.0, 0.0, 0.0
            draws[key] = np.zeros(BOOTSTRAP_RESAMPLES)
        else:
            a = _sample_values(Path(eval_dir) / f"checkpoint-{sel_step}.samples.jsonl", task, metric)
            b = _sample_values(Path(eval_dir) / f"checkpoint-{final_step}.samples.jsonl", task, metric)
            docs = sorted(set(a) & set(b), key=str)
            if set(a) != set(b):
                log.warning("%s: selected and final checkpoints were scored on different documents "
                            "(%d vs %d); pairing the %d shared ones", key, len(a), len(b), len(docs))
            arr = np.asarray([[*a[d], *b[d]] for d in docs], dtype=np.float64).reshape(-1, 4)
            # the per-sample mean must reproduce lm-eval's aggregate, else the metric is not a mean
            paired = bool(docs) and all(
                math.isclose(arr[:, 2 * j].sum() / arr[:, 2 * j + 1].sum(), v, abs_tol=1e-9)
                for j, v in ((0, sv), (1, fv)))
            if paired:
                d = paired_bootstrap(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], BOOTSTRAP_RESAMPLES, rng)
                draws[key] = d
                lo, hi = percentile_interval(d)
                ses[key] = float(np.nanstd(d, ddof=1))
                methods[key] = "paired_bootstrap"
            else:
                lo, hi = normal_diff_interval(diff, sse, fse)
                if not math.isnan(lo):
                    ses[key] = math.sqrt(sse * sse + fse * fse)
                methods[key] = "normal_stderr" if not math.isnan(lo) else "none"
        row.update({f"diff_lo:{key}": lo, f"diff_hi:{key}": hi})
    keys = [f"{t}/{m}" for t, m in metrics.items()]
    for which in ("selected", "final", "diff"):
        vals = [row[f"{which}:{k}"] for k in keys]
        row[f"{which}:average"] = float(np.mean(vals)) if vals else float("nan")
    lo = hi = float("nan")
    if keys and all(draws[k] is not None for k in keys):
        lo, hi = percentile_interval(np.mean([draws[k] for k in keys], axis=0))
    elif keys and all(k in ses for k in keys):
        h = Z95 * math.sqrt(sum(ses[k] ** 2 for k in keys)) / len(keys)
        lo, hi = row["diff:average"] - h, row["diff:average"] + h
    row.update({"diff_lo:average": lo, "diff_hi:average": hi})
    kinds = sorted(set(methods.values()))
    method = kinds[0] if len(kinds) == 1 else "; ".join(f"{k}={methods[k]}" for k in keys)
    return row, method


def _objecqa_labels(scores: pl.DataFrame, step: int, column: str) -> dict[str, int]:
    sub = scores.filter((pl.col("task") == "objecqa") & (pl.col("step") == step))
    return {str(i): int(x == "objective") for i, x in zip(sub["id"].to_list(), sub[column].to_list())}


def early_stopping_row(curve: pl.DataFrame, tidy: pl.DataFrame, eval_dir: str | Path, scores: pl.DataFrame,
                       metrics: Mapping[str, str], seed: int) -> dict[str, Any]:
    """One run's row of ``early_stopping.csv``: the IFS-selected against the final checkpoint.

    ``curve``: the run's :func:`select_checkpoint` curve; ``tidy`` / ``eval_dir``: its
    ``evaluate_checkpoints`` outputs (tidy table, folder with ``checkpoint-<step>.samples.jsonl``);
    ``scores``: its ``score_ifs`` table; ``metrics`` = config ``performance.metrics``; ``seed``
    seeds the bootstrap. Differences are **selected minus final** (negative: stopping early
    loses). Columns, in order:

    * ``dataset, generator, selection, base, plateau_found, selected_step, final_step``;
    * compute saved: ``steps_saved`` (optimizer steps), ``selected_tokens`` / ``final_tokens``
      (training tokens seen, trl ``num_tokens``), ``tokens_saved``, ``tokens_saved_share``
      (of the final run's tokens), ``selected_examples`` / ``final_examples``;
    * ``selected_ifs`` / ``final_ifs`` with ``_lo`` / ``_hi`` (95% Wilson);
    * per ``task/metric`` and for ``average`` (their mean): ``selected:``, ``final:``, ``diff:``,
      ``diff_lo:``, ``diff_hi:``. The interval is a paired bootstrap over the task's documents
      (:data:`~teachfit.studies.ifs.intervals.BOOTSTRAP_RESAMPLES` resamples, percentile 95%) from
      the two checkpoints' per-sample files when their per-document mean reproduces lm-eval's
      value; otherwise the normal interval from lm-eval's two stderrs (unpaired). For the average,
      the tasks' bootstrap draws are averaged (or their standard errors combined).
      ``perf_interval`` names the method (``paired_bootstrap``, ``normal_stderr``,
      ``same_checkpoint``, ``not_evaluated`` or a per-task list). A checkpoint that was not
      evaluated gives NaN values.
    * ObjecQA (calibrated judge) and ObjecQA_raw: ``selected_objecqa``, ``final_objecqa``,
      ``objecqa_diff`` with ``_lo`` / ``_hi`` (paired bootstrap over the questions), and the same
      with ``_raw``.
    """
    require_columns(curve, ["step", "selected", "plateau_found", "ifs", "ifs_lo", "ifs_hi", "num_tokens",
                            "examples_seen"], "IFS curve")
    rng = np.random.default_rng(seed)
    c = curve.sort("step")
    sel = c.filter(pl.col("selected")).row(0, named=True)
    fin = c.row(c.height - 1, named=True)
    row: dict[str, Any] = {k: c[k][0] for k in ("dataset", "generator", "selection", "base")}
    tokens_saved = fin["num_tokens"] - sel["num_tokens"]
    row.update(
        plateau_found=bool(sel["plateau_found"]),
        selected_step=int(sel["step"]), final_step=int(fin["step"]),
        steps_saved=int(fin["step"] - sel["step"]),
        selected_tokens=sel["num_tokens"], final_tokens=fin["num_tokens"], tokens_saved=tokens_saved,
        tokens_saved_share=tokens_saved / fin["num_tokens"] if fin["num_tokens"] else float("nan"),
        selected_examples=int(sel["examples_seen"]), final_examples=int(fin["examples_seen"]),
        selected_ifs=sel["ifs"], selected_ifs_lo=sel["ifs_lo"], selected_ifs_hi=sel["ifs_hi"],
        final_ifs=fin["ifs"], final_ifs_lo=fin["ifs_lo"], final_ifs_hi=fin["ifs_hi"],
    )
    perf, method = _performance_diff(tidy, eval_dir, int(sel["step"]), int(fin["step"]), metrics, rng)
    row.update(perf)
    row["perf_interval"] = method
    for suffix, column in (("", "judge_label"), ("_raw", "judge_label_raw")):
        sv, fv = sel.get(f"objecqa{suffix}", float("nan")), fin.get(f"objecqa{suffix}", float("nan"))
        lo = hi = float("nan")
        if sel["step"] == fin["step"]:
            lo = hi = 0.0
        elif scores.height and "id" in scores.columns:
            a = _objecqa_labels(scores, int(sel["step"]), column)
            b = _objecqa_labels(scores, int(fin["step"]), column)
            ids = sorted(set(a) & set(b))
            if ids:
                x = np.asarray([a[i] for i in ids], dtype=np.float64)
                y = np.asarray([b[i] for i in ids], dtype=np.float64)
                ones = np.ones_like(x)
                lo, hi = percentile_interval(paired_bootstrap(x, ones, y, ones, BOOTSTRAP_RESAMPLES, rng))
        row.update({f"selected_objecqa{suffix}": sv, f"final_objecqa{suffix}": fv,
                    f"objecqa{suffix}_diff": sv - fv, f"objecqa{suffix}_diff_lo": lo,
                    f"objecqa{suffix}_diff_hi": hi})
    return row


# =========================================================================== rules


def build_ifs_tables(model_scores: list[str], curves: list[str], run_scores: list[str], evals: list[str],
                     eval_dirs: list[str], models: str | Path, checkpoints: str | Path,
                     early_stopping: str | Path, performance: Mapping[str, Any], seed: int) -> None:
    """Rule ``build_ifs_tables``: the IFS study's three tables.

    * ``models`` (CSV): :func:`ifs_table` per (model, prompt format) of every ``score_ifs``
      table in ``model_scores``, plus the model's :func:`objecqa_scores` (ObjecQA is asked in the
      chat format only, so it is the same on every format row of a model).
    * ``checkpoints`` (CSV): every run's curve (:func:`select_checkpoint`'s Parquet files in
      ``curves``) stacked.
    * ``early_stopping`` (CSV): one :func:`early_stopping_row` per run. ``curves``,
      ``run_scores`` (``score_ifs`` tables of the runs), ``evals`` (``evaluate_checkpoints`` tidy
      tables) and ``eval_dirs`` (their folders of per-sample files) are aligned, one per run
      (else ``ValueError``). ``performance`` = config ``performance`` (its ``metrics``), ``seed``
      seeds the bootstraps. Source: AlShikh et al. 2023 (early stopping vs the last checkpoint).
    """
    lengths = {len(curves), len(run_scores), len(evals), len(eval_dirs)}
    if len(lengths) != 1:
        raise ValueError(f"build_ifs_tables: {len(curves)} curves, {len(run_scores)} score tables, "
                         f"{len(evals)} eval tables and {len(eval_dirs)} eval folders (one of each per run)")
    rows = []
    empty_obj = pl.DataFrame(schema={"judge_label": pl.String, "judge_label_raw": pl.String})
    for p in model_scores:
        s = read_parquet(p)
        t = ifs_table(s.filter(pl.col("task") == "ifs"), by=("model", "fmt"))
        obj = s.filter(pl.col("task") == "objecqa")
        t = t.with_columns(*[pl.lit(v).alias(k) for k, v in
                             objecqa_scores(obj if obj.height else empty_obj).items()])
        rows.append(t)
    write_csv(pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame(), models)
    cur = pl.concat([read_parquet(p) for p in curves], how="diagonal_relaxed") if curves else pl.DataFrame()
    write_csv(cur, checkpoints)
    es_rows = [
        early_stopping_row(read_parquet(cpath), read_parquet(epath), edir, read_parquet(spath),
                           performance["metrics"], seed)
        for cpath, spath, epath, edir in zip(curves, run_scores, evals, eval_dirs)
    ]
    write_csv(pl.DataFrame(es_rows) if es_rows else pl.DataFrame(), early_stopping)


def plot_ifs_curve(curve: str | Path, figure: str | Path, style: Mapping[str, Any]) -> None:
    """Rule ``plot_ifs_curve``: IFS, IFS_partial, IFS_full, ObjecQA and ObjecQA_raw over examples
    seen for one run (``curve``: :func:`select_checkpoint`'s Parquet), each with its 95% Wilson
    interval as a band, the plateau-selected checkpoint marked.

    ``style`` = config ``analysis.figures`` (only PNG is written, to ``figure``).
    """
    fs = figures.FigureStyle.from_dict({**style, "formats": ["png"]})
    c = read_parquet(curve)
    long = pl.concat([
        c.select("examples_seen", pl.col(m).alias("value"), pl.col(f"{m}_lo").alias("lo"),
                 pl.col(f"{m}_hi").alias("hi"), pl.lit(m).alias("metric"))
        for m in SHARE_COLUMNS
    ])
    sel = c.filter(pl.col("selected"))
    marks = {f"IFS plateau (step {sel['step'][0]})": float(sel["examples_seen"][0])} if sel.height else None
    run = "/".join(str(c[k][0]) for k in ("dataset", "generator", "selection", "base"))
    figures.line_curves(long, x="examples_seen", y="value", group="metric",
                        path_stem=Path(figure).with_suffix(""), title=f"IFS and ObjecQA (95% intervals): {run}",
                        style=fs, marks=marks, band=("lo", "hi"))
