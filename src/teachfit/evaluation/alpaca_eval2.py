"""AlpacaEval 2 judging (protocol ``alpaca_eval2``) and its length-controlled win rate.

Conventions of AlpacaEval 2's default annotator ``weighted_alpaca_eval_gpt4_turbo``
(tatsu-lab/alpaca_eval v0.6.6, ``evaluators_configs/weighted_alpaca_eval_gpt4_turbo/configs.yaml``,
``completion_parsers.py::logprob_parser``, ``annotators/pairwise_evaluator.py``,
``processors.py::RandomSwitchTwoColumnsProcessor``), reproduced here:

* ``output_1`` is the reference (baseline, AlpacaEval's ``gpt4_turbo``), ``output_2`` the evaluated
  model; ``preference`` is a float in [1, 2]: 1 = the reference wins, 2 = the model wins.
* The judge sees the instruction and the two outputs labelled with the model identifiers ``m``
  (first) and ``M`` (second) and answers with one of them. It is called with ``max_tokens=1,
  temperature=1, logprobs=true, top_logprobs=5`` and the preference is read from the top-5
  alternatives of the first answer token (exact token text ``"m"`` / ``"M"``; one missing from
  the top 5 counts as probability 0): ``preference = 2 - P(m) / (P(m) + P(M))``. When neither is
  among them the preference is NaN (AlpacaEval warns and the row drops out of every rate; we
  count such rows as ``n_unparsed``).
* Order: per row, ``random.Random("is_switched_outputs" + instruction + "123").choices([False,
  True])[0]`` decides whether the two outputs are shown swapped; a swapped row's preference is
  mapped back with ``3 - x``. Each pair is judged once, in that one order.
* Identical outputs get preference 1.5 without a judge call.
* Win rate (``metrics/winrate.py::get_winrate``): the mean of ``preference - 1`` over rows with a
  valid preference, its standard error (pandas ``sem``), wins (> 1.5), base wins (< 1.5), draws
  (== 1.5) and the discrete win rate (each preference rounded, draws counted one half).

The judge prompt is written in our own words (the wording of AlpacaEval's
``alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt`` is not copied); its layout, the identifiers
``m`` / ``M`` and the single-identifier answer are AlpacaEval's. A benchmark's ``judge_prompt``
file can supply the official text (:func:`teachfit.evaluation.winrate_judges.load_judge_prompt`).

The length-controlled win rate that *is* AlpacaEval 2's LC comes from the ``alpaca-eval`` package:
:func:`alpaca_eval_lc` (rule ``alpaca_eval_lc``) calls
``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate`` on these annotations. That call
downloads ``df_gamed.csv`` from the hub data set ``tatsu-lab/alpaca_eval`` every time, so it runs
only where the hub is reachable. Offline, :func:`teachfit.evaluation.winrate.length_controlled_minimal_inhouse`
is the project's own, simpler fit (named ``lc_win_rate_minimal_inhouse``; never AlpacaEval's LC).

Rates are fractions in [0, 1] (AlpacaEval prints percentages). Lengths are characters.
"""

from __future__ import annotations

import json
import logging
import math
import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.evaluation.winrate_judges import Conversation, render
from teachfit.io import read_json, read_parquet, write_json

log = logging.getLogger(__name__)

NUMERATOR_TOKEN = "m"  # the identifier of output_1 (as shown to the judge)
LABEL_TOKENS = ("m", "M")
TOP_LOGPROBS = 5
JUDGE_TEMPERATURE = 1.0  # AlpacaEval's setting; the top_logprobs do not depend on it
SWITCH_SEED_PREFIX = "is_switched_outputs"  # RandomSwitchTwoColumnsProcessor's _switch_column
SWITCH_SEED = "123"  # BaseProcessor's default seed
GLM_NAMES = ("length_controlled_v1", "length_controlled_minimal", "length_controlled_noreg")

SYSTEM_PROMPT = (
    "You are an expert evaluator of large language models. You compare what different models "
    "wrote in reply to the same instruction and pick the reply a careful human reader would "
    "prefer. Your choices are used to rank the models on a leaderboard."
)
USER_TEMPLATE = (
    "I am building a leaderboard of large language models. Below is an instruction that was given "
    "to two models, followed by what each model wrote. Decide which output is better from the point "
    "of view of the person who wrote the instruction.\n\n"
    "## Instruction\n\n"
    "{\n"
    '    "instruction": """{instruction}""",\n'
    "}\n\n"
    "## Model Outputs\n\n"
    "The two outputs are listed in no particular order. Each one carries the identifier of the "
    "model that wrote it.\n\n"
    "{\n"
    "    {\n"
    '        "model_identifier": "m",\n'
    '        "output": """{output_1}"""\n'
    "    },\n"
    "    {\n"
    '        "model_identifier": "M",\n'
    '        "output": """{output_2}"""\n'
    "    }\n"
    "}\n\n"
    "## Task\n\n"
    "Weigh the quality and the relevance of the two outputs and choose the model whose output is "
    "best. Reply with that model's identifier and nothing else: exactly one of m or M, without "
    "quotes, spaces or line breaks.\n\n"
    "## Best Model Identifier"
)
JUDGED_COLUMNS = ("id", "index", "instruction", "output_1", "output_2", "generator_1", "generator_2",
                  "annotator", "preference", "is_switched_outputs", "p_win", "win", "len_model", "len_ref",
                  "top_logprobs")


def is_switched_outputs(instruction: str) -> bool:
    """Whether AlpacaEval shows this instruction's two outputs swapped (seeded by the instruction
    text; ``RandomSwitchTwoColumnsProcessor.preprocess`` with ``random_seed_columns=["instruction"]``
    and seed 123)."""
    if not isinstance(instruction, str):
        raise TypeError(f"instruction must be a string, got {type(instruction).__name__}")
    return random.Random(SWITCH_SEED_PREFIX + instruction + SWITCH_SEED).choices([False, True], k=1)[0]


def judge_conversation(instruction: str, output_1: str, output_2: str,
                       prompt: tuple[str, str] | None = None) -> Conversation:
    """System and user turns asking which of the outputs labelled ``m`` (``output_1``) and ``M``
    (``output_2``) is better. ``prompt`` = ``(system, user)`` templates replacing our wording."""
    system, user = prompt or (SYSTEM_PROMPT, USER_TEMPLATE)
    values = {"instruction": instruction, "output_1": output_1, "output_2": output_2}
    return [{"role": "system", "content": system}, {"role": "user", "content": render(user, values)}]


def logprob_preference(top: Sequence[tuple[str, float]]) -> float:
    """``2 - P(m) / (P(m) + P(M))`` from the first answer token's top alternatives
    ``[(token, logprob), ...]`` (AlpacaEval's ``logprob_parser`` with ``is_binarize=False``): tokens
    match exactly, a label missing from the list has probability 0, and NaN is returned when
    neither label is present. In [1, 2] for the order shown to the judge."""
    lp: dict[str, float] = {}
    for token, logprob in top:
        if token in LABEL_TOKENS and token not in lp:
            lp[token] = float(logprob)
    if not lp:
        return float("nan")
    lm = lp.get(NUMERATOR_TOKEN, -math.inf)
    denom = np.logaddexp.reduce([lp.get(t, -math.inf) for t in LABEL_TOKENS])
    return float(2.0 - math.exp(lm - denom))


def annotate(instructions: Sequence[str], model_outputs: Sequence[str], reference_outputs: Sequence[str],
             top_logprobs_fn: Callable[[list[Conversation]], list[list[tuple[str, float]]]],
             ids: Sequence[str], indices: Sequence[int], generator_1: str, generator_2: str,
             annotator: str, prompt: tuple[str, str] | None = None) -> pl.DataFrame:
    """AlpacaEval 2 annotations of one model against the reference, one row per instruction.

    ``top_logprobs_fn(conversations)`` returns, per conversation, the judge's top alternatives of
    its first answer token (:meth:`teachfit.evaluation.winrate_judges.ChatJudge.top_logprobs` with k = 5).
    ``indices[i]`` is instruction i's position in the benchmark's instruction list (AlpacaEval's
    ``index``, which selects its instruction difficulty). Columns :data:`JUDGED_COLUMNS`:
    AlpacaEval's ``instruction, output_1`` (reference), ``output_2`` (model), ``generator_1``,
    ``generator_2``, ``annotator``, ``preference`` (in [1, 2], NaN when unparsed),
    ``is_switched_outputs``; plus ``p_win`` = preference - 1, ``win`` = 1 / 0.5 / 0 for
    preference >, =, < 1.5 (NaN when unparsed), lengths in characters and the judge's
    ``top_logprobs`` (JSON) for audit. Identical outputs get 1.5 without a judge call.
    """
    instructions, model_outputs, reference_outputs = list(instructions), list(model_outputs), list(reference_outputs)
    n = len(instructions)
    if not (len(model_outputs) == len(reference_outputs) == len(ids) == len(indices) == n):
        raise ValueError(f"annotate: {n} instructions, {len(model_outputs)} model outputs, "
                         f"{len(reference_outputs)} reference outputs, {len(ids)} ids and {len(indices)} "
                         "indices; they must align")
    for name, seq in (("instructions", instructions), ("model_outputs", model_outputs),
                      ("reference_outputs", reference_outputs)):
        for i, v in enumerate(seq):
            if not isinstance(v, str):
                raise TypeError(f"annotate: {name}[{i}] must be a string, got {type(v).__name__}")
    switched = [is_switched_outputs(q) for q in instructions]
    same = [m == r for m, r in zip(model_outputs, reference_outputs)]
    to_judge = [i for i in range(n) if not same[i]]
    convs = []
    for i in to_judge:
        out_1, out_2 = reference_outputs[i], model_outputs[i]
        shown = (out_2, out_1) if switched[i] else (out_1, out_2)
        convs.append(judge_conversation(instructions[i], *shown, prompt=prompt))
    tops = top_logprobs_fn(convs) if convs else []
    if len(tops) != len(convs):
        raise RuntimeError(f"annotate: the judge returned {len(tops)} answers for {len(convs)} conversations")
    preference = np.full(n, 1.5)
    top_json = [""] * n
    for i, top in zip(to_judge, tops):
        pref = logprob_preference(top)
        preference[i] = 3.0 - pref if switched[i] else pref
        top_json[i] = json.dumps([[t, lp] for t, lp in top], ensure_ascii=False)
    p_win = preference - 1.0
    win = np.where(np.isnan(preference), np.nan,
                   np.where(preference > 1.5, 1.0, np.where(preference < 1.5, 0.0, 0.5)))
    return pl.DataFrame({
        "id": [str(x) for x in ids], "index": [int(x) for x in indices], "instruction": instructions,
        "output_1": reference_outputs, "output_2": model_outputs,
        "generator_1": [generator_1] * n, "generator_2": [generator_2] * n, "annotator": [annotator] * n,
        "preference": preference, "is_switched_outputs": switched, "p_win": p_win, "win": win,
        "len_model": [len(m) for m in model_outputs], "len_ref": [len(r) for r in reference_outputs],
        "top_logprobs": top_json,
    }, schema_overrides={"index": pl.Int64, "preference": pl.Float64, "p_win": pl.Float64, "win": pl.Float64,
                         "len_model": pl.Int64, "len_ref": pl.Int64}).select(JUDGED_COLUMNS)


def winrate_from_preferences(preference: Sequence[float]) -> dict[str, float]:
    """AlpacaEval's ``get_winrate`` on preferences in [1, 2] (0 counts as a draw, 1.5; NaN and
    out-of-range values are dropped), as fractions: ``win_rate`` = mean(preference - 1),
    ``standard_error`` (sample std / sqrt(n); NaN for one row), ``n_wins`` (> 1.5),
    ``n_wins_base`` (< 1.5), ``n_draws`` (== 1.5, before dropping), ``n_total`` (valid rows) and
    ``discrete_win_rate`` (each preference rounded, half to even, draws one half)."""
    p = np.asarray(preference, dtype=np.float64).copy()
    p[p == 0.0] = 1.5
    n_draws = int((p == 1.5).sum())
    valid = p[(p >= 1.0) & (p <= 2.0)]
    x = valid - 1.0
    n = x.size
    rounded = np.where(valid == 1.5, 1.5, np.round(valid))
    return {
        "win_rate": float(x.mean()) if n else float("nan"),
        "standard_error": float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "n_wins": int((x > 0.5).sum()), "n_wins_base": int((x < 0.5).sum()), "n_draws": n_draws,
        "n_total": int(n),
        "discrete_win_rate": float((rounded - 1.0).mean()) if n else float("nan"),
    }


def summarize_annotations(df: pl.DataFrame) -> dict[str, Any]:
    """The AlpacaEval win rate of :func:`annotate`'s table (:func:`winrate_from_preferences`) plus
    ``n`` (rows), ``n_identical`` (pairs not sent to the judge), ``n_unparsed`` (NaN preference:
    neither label among the judge's top 5), ``p_first`` (mean probability that the judge picks
    the output shown first, ``m``; 0.5 = no position bias), average lengths and the names."""
    pref = df["preference"].to_numpy().astype(np.float64)
    switched = df["is_switched_outputs"].to_numpy().astype(bool)
    shown = np.where(switched, 3.0 - pref, pref)  # preference in the order the judge saw
    judged = df["output_1"] != df["output_2"]
    mask = judged.to_numpy() & ~np.isnan(shown)
    return {
        **winrate_from_preferences(pref),
        "n": df.height,
        "n_identical": int((~judged).sum()),
        "n_unparsed": int(np.isnan(pref).sum()),
        "p_first": float((2.0 - shown[mask]).mean()) if mask.any() else float("nan"),
        "avg_len_model": float(df["len_model"].mean()) if df.height else float("nan"),
        "avg_len_ref": float(df["len_ref"].mean()) if df.height else float("nan"),
    }


# --------------------------------------------------------------------------- AlpacaEval's LC (rule alpaca_eval_lc)


def annotations_frame(df: pl.DataFrame) -> Any:
    """:func:`annotate`'s table as the pandas DataFrame AlpacaEval's GLM reads: columns
    ``instruction, output_1, output_2, generator_1, generator_2, annotator, preference``, indexed by
    the AlpacaEval instruction ``index`` (``_get_featurized_data`` turns the index into the column
    that selects each instruction's difficulty), sorted by it."""
    import pandas as pd

    cols = ["instruction", "output_1", "output_2", "generator_1", "generator_2", "annotator", "preference"]
    missing = [c for c in ["index", *cols] if c not in df.columns]
    if missing:
        raise ValueError(f"annotations_frame: columns {missing} missing; has {df.columns}")
    if df["index"].n_unique() != df.height:
        raise ValueError("annotations_frame: duplicate instruction indices")
    df = df.sort("index")
    frame = pd.DataFrame({c: df[c].to_list() for c in cols}, index=pd.Index(df["index"].to_list()))
    frame["preference"] = frame["preference"].astype(float)
    return frame


def get_length_controlled_winrate(frame: Any, glm_name: str) -> dict[str, Any]:
    """``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate(frame, glm_name=glm_name,
    save_weights_dir=None)`` (no weights written into the installed package); percentages, as the
    package returns them. The hub download of ``df_gamed.csv`` happens inside that call. Two known
    warnings are silenced: alpaca-eval 0.6.6's ``pkg_resources`` import, and scikit-learn 1.9's
    FutureWarnings about the ``penalty`` / ``l1_ratios`` arguments of the package's
    ``LogisticRegressionCV`` call (scikit-learn is pinned below 1.10, where they are removed)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from alpaca_eval.metrics import glm_winrate

        warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
        return glm_winrate.get_length_controlled_winrate(frame, glm_name=glm_name, save_weights_dir=None)


def alpaca_eval_lc(judged: str | Path, summary: str | Path, result: str | Path, glm_name: str) -> dict[str, Any]:
    """AlpacaEval 2's length-controlled win rate of one student; rule ``alpaca_eval_lc``.

    ``judged``: :func:`annotate`'s Parquet (protocol ``alpaca_eval2``, rows in any order; sorted by
    ``index``); ``summary``: the judge's summary JSON
    (:func:`teachfit.evaluation.winrate.judge_winrate`). Calls :func:`get_length_controlled_winrate`
    with ``glm_name`` (``length_controlled_v1`` = AlpacaEval 2's LC). Needs the hub
    (``df_gamed.csv`` of ``tatsu-lab/alpaca_eval`` is downloaded at call time; the rule is a local
    rule, run on the node that has network). Writes ``result`` (JSON): the summary plus
    ``lc_win_rate_alpaca_eval`` and ``lc_stderr_alpaca_eval`` (fractions: the package's
    percentages / 100), ``alpaca_eval_win_rate`` (the package's raw win rate, / 100, equal to
    the summary's ``win_rate``), ``alpaca_eval_glm`` and ``alpaca_eval_version``.
    """
    from importlib.metadata import version

    if glm_name not in GLM_NAMES:
        raise ValueError(f"alpaca_eval_lc: glm_name {glm_name!r} is not known; allowed: {', '.join(GLM_NAMES)}")
    df = read_parquet(judged, required=["index", "instruction", "output_1", "output_2", "generator_1",
                                        "generator_2", "annotator", "preference"])
    base = read_json(summary)
    metrics = get_length_controlled_winrate(annotations_frame(df), glm_name)
    out = {
        **base,
        "lc_win_rate_alpaca_eval": float(metrics["length_controlled_winrate"]) / 100.0,
        "lc_stderr_alpaca_eval": float(metrics["lc_standard_error"]) / 100.0,
        "alpaca_eval_win_rate": float(metrics["win_rate"]) / 100.0,
        "alpaca_eval_glm": glm_name,
        "alpaca_eval_version": version("alpaca-eval"),
    }
    write_json(out, result)
    return out

