"""Win rates of the teacher study's students against reference outputs, per named benchmark
(``teacher.winrate.benchmarks``); rules ``answer_winrate`` and ``judge_winrate``.

Three judging protocols (``protocol`` of a benchmark):

* ``pairwise_ab`` (the default run's CPU stand-in, our own protocol): a judge reads an
  instruction and two outputs (:func:`pairwise_prompt`) and the next-token probabilities of the
  label words ``"A"`` and ``"B"`` say which output it prefers. Position bias is controlled by
  judging every pair in both orders (model output as A, then as B) and averaging the
  probability that the model's output wins (:func:`judge_pairs`). The judge is injected:
  ``score_fn(prompts, label_words) -> array (n, 2)`` of probabilities (or any non-negative
  scores) of each label word as the next token after the prompt (the workflow's comes from
  :func:`teachfit.scoring.label_judge.label_scorer`). :func:`win_rate` is the win rate (ties count one
  half) with its standard error.
* ``alpaca_eval2``: AlpacaEval 2's annotator conventions (:mod:`teachfit.evaluation.alpaca_eval2`).
* ``arena_hard``: Arena-Hard v0.1's judge and scoring (:mod:`teachfit.evaluation.arena_hard`).

Length control (``length_controlled`` of a benchmark):

* ``inhouse_minimal`` (:func:`length_controlled_minimal_inhouse`, reported as
  ``lc_win_rate_minimal_inhouse``): the project's own offline fit of the formula of AlpacaEval's
  ``length_controlled_minimal`` GLM, i.e. AlpacaEval 2's LC model *without* its
  instruction-difficulty term and *without* its regularisation towards the gamed (verbose /
  concise) baseline annotations, fitted by plain maximum likelihood with a small L2 penalty on
  the length slope instead of AlpacaEval's L1-penalised, 5-fold cross-validated fit. It is not
  AlpacaEval's LC and is never labelled so.
* ``alpaca_eval`` (protocol ``alpaca_eval2`` only): AlpacaEval 2's own LC from the ``alpaca-eval``
  package (:func:`teachfit.evaluation.alpaca_eval2.alpaca_eval_lc`, rule ``alpaca_eval_lc``,
  needs the hub); the in-house value is reported beside it.
* ``none``: the raw win rate only (Arena-Hard).

Rates are fractions in [0, 1], not percentages. Lengths are counted in characters, as AlpacaEval
does. Nothing here imports torch except the two rule functions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.checkpoints import final_model_dir, load_for_inference, merge_lora
from teachfit.evaluation import alpaca_eval2 as ae
from teachfit.evaluation import arena_hard as ah
from teachfit.evaluation.winrate_judges import chat_judge, load_judge_prompt
from teachfit.generation.base import SamplingConfig
from teachfit.generation.engines import BackendConfig
from teachfit.generation.hf import TransformersBackend
from teachfit.io import DataError, content_id, read_parquet, write_json, write_parquet
from teachfit.prompts import format_prompt
from teachfit.scoring.label_judge import first_label_share, label_scorer
from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)

WINRATE_VERSION = 2  # bump when prompts, estimators or summary keys change
PROTOCOLS = ("pairwise_ab", "alpaca_eval2", "arena_hard")
LENGTH_CONTROL = ("none", "inhouse_minimal", "alpaca_eval")
LABEL_WORDS = ("A", "B")
TIE_TOL = 1e-9
TARGETS = ("win", "p_win")

JUDGE_INSTRUCTIONS = (
    "You are comparing two responses written for the same instruction. Decide which "
    "response serves the person who wrote the instruction better: it should do what was "
    "asked, be correct, relevant and clear, and give the level of detail the task calls "
    "for. A longer response is not better for being longer, and the order in which the "
    "responses are shown does not matter.\n\n"
)


def pairwise_prompt(instruction: str, output_a: str, output_b: str) -> str:
    """Judge prompt asking whether output A or output B is better; ends with ``Answer:``."""
    for name, value in (("instruction", instruction), ("output_a", output_a), ("output_b", output_b)):
        if not isinstance(value, str):
            raise TypeError(f"pairwise_prompt: {name} must be a string, got {type(value).__name__}")
    return (
        JUDGE_INSTRUCTIONS
        + f"### Instruction\n{instruction.strip()}\n\n"
        + f"### Response A\n{output_a.strip()}\n\n"
        + f"### Response B\n{output_b.strip()}\n\n"
        + "Which response is better, A or B? Reply with the single letter A or B.\n"
        + "Answer:"
    )


def judge_pairs(
    instructions: Sequence[str],
    model_outputs: Sequence[str],
    reference_outputs: Sequence[str],
    score_fn: Callable[[list[str], Sequence[str]], Any],
    seed: int = 0,
    label_words: Sequence[str] = LABEL_WORDS,
    ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Judge every (model output, reference output) pair in both orders.

    Returns one row per instruction: ``id`` (``ids[i]``, default a content hash of the
    instruction and both outputs), ``p_win`` = mean over the two orders of P(the model's
    output is preferred) (each order's P renormalised over the two label words),
    ``win`` = 1 / 0.5 / 0 for ``p_win`` >, =, < 0.5 (ties within 1e-9), ``len_model``,
    ``len_ref`` (characters), and the per-order values ``p_win_model_first`` (model
    output shown as A) and ``p_win_model_second`` (shown as B).

    All 2n prompts go to ``score_fn`` in one call, in an order shuffled with ``seed``
    so that a batching score_fn does not put one presentation order systematically
    in the same batch positions; with a score_fn whose scores do not depend on the
    batch, the result does not depend on ``seed``.
    """
    instructions, model_outputs, reference_outputs = list(instructions), list(model_outputs), list(reference_outputs)
    n = len(instructions)
    if len(model_outputs) != n or len(reference_outputs) != n:
        raise ValueError(f"judge_pairs: {n} instructions, {len(model_outputs)} model outputs and "
                         f"{len(reference_outputs)} reference outputs; they must align")
    for name, seq in (("instructions", instructions), ("model_outputs", model_outputs),
                      ("reference_outputs", reference_outputs)):
        for i, v in enumerate(seq):
            if not isinstance(v, str):
                raise TypeError(f"judge_pairs: {name}[{i}] must be a string, got {type(v).__name__}")
    if len(label_words) != 2 or len(set(label_words)) != 2:
        raise ValueError(f"judge_pairs: need 2 distinct label words, got {list(label_words)}")
    if ids is None:
        ids = [content_id("winrate", q, m, r) for q, m, r in zip(instructions, model_outputs, reference_outputs)]
    ids = [str(x) for x in ids]
    if len(ids) != n:
        raise ValueError(f"judge_pairs: {len(ids)} ids for {n} instructions")
    schema = {"id": pl.String, "p_win": pl.Float64, "win": pl.Float64, "len_model": pl.Int64,
              "len_ref": pl.Int64, "p_win_model_first": pl.Float64, "p_win_model_second": pl.Float64}
    if n == 0:
        return pl.DataFrame(schema=schema)

    prompts = [pairwise_prompt(q, m, r) for q, m, r in zip(instructions, model_outputs, reference_outputs)]
    prompts += [pairwise_prompt(q, r, m) for q, m, r in zip(instructions, model_outputs, reference_outputs)]
    order = np.random.default_rng(seed).permutation(2 * n)
    p_a_shuffled = first_label_share(score_fn([prompts[k] for k in order], list(label_words)), 2 * n)
    p_a = np.empty(2 * n)
    p_a[order] = p_a_shuffled
    first = p_a[:n]  # model output is A: the model wins with P(A)
    second = 1.0 - p_a[n:]  # model output is B: the model wins with P(B)
    p_win = (first + second) / 2.0
    win = np.where(np.abs(p_win - 0.5) <= TIE_TOL, 0.5, (p_win > 0.5).astype(np.float64))
    return pl.DataFrame(
        {
            "id": ids,
            "p_win": p_win,
            "win": win,
            "len_model": [len(m) for m in model_outputs],
            "len_ref": [len(r) for r in reference_outputs],
            "p_win_model_first": first,
            "p_win_model_second": second,
        },
        schema=schema,
    )


def _column(df: pl.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        raise ValueError(f"win-rate table has no column {col!r}; has {df.columns}")
    values = df[col].to_numpy().astype(np.float64)
    if np.isnan(values).any():
        raise ValueError(f"win-rate table: column {col!r} has missing values")
    return values


def win_rate(df: pl.DataFrame) -> dict[str, float]:
    """AlpacaEval win rate of a :func:`judge_pairs` table.

    ``win_rate`` = mean of ``win`` (ties count 1/2), ``n`` = pairs, ``stderr`` = its
    standard error (sample std / sqrt(n); NaN for n = 1). Also ``soft_win_rate`` =
    mean ``p_win``, and ``p_first`` = the judge's mean probability of choosing the
    output shown first (0.5 = no position bias) when the per-order columns exist.
    """
    win = _column(df, "win")
    n = win.size
    if n == 0:
        raise ValueError("win_rate: empty table")
    out = {
        "win_rate": float(win.mean()),
        "n": int(n),
        "stderr": float(win.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "soft_win_rate": float(_column(df, "p_win").mean()),
    }
    if {"p_win_model_first", "p_win_model_second"} <= set(df.columns):
        first, second = _column(df, "p_win_model_first"), _column(df, "p_win_model_second")
        out["p_first"] = float(((first + (1.0 - second)) / 2.0).mean())
    return out


def _sigmoid(z: np.ndarray | float) -> Any:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z)))  # overflow-free


def length_controlled_minimal_inhouse(df: pl.DataFrame, target: str = "win",
                                     l2: float = 1e-3) -> dict[str, float]:
    """The project's in-house length-controlled win rate: the predicted win rate at zero length
    difference. Not AlpacaEval's LC (see the module docstring); reported as
    ``lc_win_rate_minimal_inhouse``.

    Fits the formula of AlpacaEval's ``length_controlled_minimal`` GLM
    (alpaca_eval ``metrics/glm_winrate.py``: ``np.tanh(std_delta_len) + not_gamed_baseline - 1``)
    without the instruction-difficulty term and the gamed-baseline rows of
    ``length_controlled_v1``:

        P(model wins) = sigmoid(b0 + b1 * tanh(d / sd(d))),  d = len_model - len_ref

    (``sd`` = sample std of ``d``, not centred, so d = 0 still means equal lengths; AlpacaEval uses
    ``len_ref - len_model``, which only flips the sign of b1), to the ``target`` column as soft
    labels with binary cross-entropy (AlpacaEval's duplication of each row into a y = 1 row of
    weight p and a y = 0 row of weight 1 - p minimises the same loss). ``"win"``: the
    1 / 0.5 / 0 indicator (protocol ``pairwise_ab``); ``"p_win"``: the judge's probability (for
    ``alpaca_eval2``, AlpacaEval's ``preference - 1``). Fitted by ``scipy.optimize.minimize``
    (L-BFGS-B) on the mean loss plus ``l2 * b1**2 / 2`` (the slope only, so the fit stays finite
    under separation), where AlpacaEval uses an L1-penalised, 5-fold cross-validated
    ``LogisticRegressionCV``. The rate is ``sigmoid(b0)``: what the judge would prefer if both
    outputs had the same length. ``stderr`` is the delta-method standard error from the sandwich
    covariance of (b0, b1).

    Degenerate cases: if every target is 0 (or every one is 1) the rate is that value
    (stderr 0); if ``d`` does not vary the length effect cannot be separated from
    the intercept, the length feature is dropped and the rate equals the raw mean
    (logged as a warning). Raises ``ValueError`` for an unknown target, l2 < 0, fewer than 2
    rows, targets outside [0, 1] or missing columns.

    Returns ``lc_win_rate, stderr, n, win_rate`` (raw mean of ``target``),
    ``intercept, length_coef, len_scale`` (= sd(d)).
    """
    from scipy.optimize import minimize

    if target not in TARGETS:
        raise ValueError(f"length_controlled_minimal_inhouse: target {target!r} is not known; allowed: {', '.join(TARGETS)}")
    if l2 < 0:
        raise ValueError(f"length_controlled_minimal_inhouse: l2 must be >= 0, got {l2}")
    y = _column(df, target)
    n = y.size
    if n < 2:
        raise ValueError(f"length_controlled_minimal_inhouse: need at least 2 pairs, got {n}")
    if (y < 0).any() or (y > 1).any():
        raise ValueError(f"length_controlled_minimal_inhouse: column {target!r} must lie in [0, 1]")
    d = _column(df, "len_model") - _column(df, "len_ref")
    scale = float(d.std(ddof=1))
    raw = float(y.mean())
    base = {"n": int(n), "win_rate": raw, "len_scale": scale}
    if np.all(y == 0.0) or np.all(y == 1.0):
        return {**base, "lc_win_rate": raw, "stderr": 0.0, "intercept": math.copysign(math.inf, raw - 0.5),
                "length_coef": 0.0}
    if scale > 0:
        x = np.tanh(d / scale)
    else:
        log.warning("length_controlled_minimal_inhouse: the length difference is the same for all %d pairs; "
                    "the length effect is not identifiable, LC win rate = raw win rate", n)
        x = np.zeros(n)
    X = np.column_stack([np.ones(n), x])
    penalty = np.array([0.0, l2])

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        z = X @ b
        # mean binary cross-entropy with soft labels: softplus(z) - y z
        value = float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * b * b))
        grad = X.T @ (_sigmoid(z) - y) / n + penalty * b
        return value, grad

    b0 = np.array([math.log(raw / (1.0 - raw)), 0.0])
    res = minimize(loss, b0, jac=True, method="L-BFGS-B", options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-12})
    if not res.success:
        log.warning("length_controlled_minimal_inhouse: optimiser did not converge: %s", res.message)
    b = res.x
    p = _sigmoid(X @ b)
    # sandwich covariance of b: H^-1 M H^-1 (robust to soft labels / misspecification)
    H = (X * (p * (1.0 - p))[:, None]).T @ X + n * np.diag(penalty)
    r = p - y
    M = (X * (r * r)[:, None]).T @ X
    try:
        Hinv = np.linalg.inv(H)
        var_b0 = float((Hinv @ M @ Hinv)[0, 0])
    except np.linalg.LinAlgError:
        var_b0 = float("nan")
    lc = float(_sigmoid(b[0]))
    return {**base, "lc_win_rate": lc, "stderr": lc * (1.0 - lc) * math.sqrt(max(var_b0, 0.0)),
            "intercept": float(b[0]), "length_coef": float(b[1])}


def inhouse_lc_fields(df: pl.DataFrame, target: str, l2: float = 1e-3) -> dict[str, Any]:
    """:func:`length_controlled_minimal_inhouse` of ``df`` as summary fields, named for what they
    are: ``lc_win_rate_minimal_inhouse``, ``lc_stderr_minimal_inhouse``,
    ``lc_length_coef_minimal_inhouse``, ``lc_target_minimal_inhouse``."""
    lc = length_controlled_minimal_inhouse(df, target=target, l2=l2)
    return {"lc_win_rate_minimal_inhouse": lc["lc_win_rate"], "lc_stderr_minimal_inhouse": lc["stderr"],
            "lc_length_coef_minimal_inhouse": lc["length_coef"], "lc_target_minimal_inhouse": target}


def summarize(df: pl.DataFrame, l2: float = 1e-3, length_controlled: bool = True) -> dict[str, Any]:
    """Win rate (and, with ``length_controlled``, the in-house LC win rate on the 1 / 0.5 / 0
    ``win`` target) of a :func:`judge_pairs` table (protocol ``pairwise_ab``) in one JSON-ready
    dict."""
    out = {
        **win_rate(df),
        "avg_len_model": float(df["len_model"].mean()),
        "avg_len_ref": float(df["len_ref"].mean()),
        "winrate_version": WINRATE_VERSION,
    }
    if length_controlled:
        out.update(inhouse_lc_fields(df, target="win", l2=l2))
    return out


# --------------------------------------------------------------------------- rules answer_winrate, judge_winrate


def answer_winrate(instructions: str | Path, model_dir: str | Path, sft_dir: str | Path,
                   answers: str | Path, max_new_tokens: int, backend: dict[str, Any], seed: int,
                   threads: int | None = None) -> pl.DataFrame:
    """Greedy answers of a run's final fine-tuned student to the win-rate instructions; rule
    ``answer_winrate``.

    ``instructions``: Parquet ``id``, ``instruction``; ``sft_dir``: a
    :func:`teachfit.training.sft.train_sft` output on the base model ``model_dir``; ``backend``:
    the base model's engine settings (:func:`teachfit.generation.engines.backend_settings`).
    Prompts use the student's SFT chat template; answers stop at ``max_new_tokens`` tokens.

    * ``transformers``: the final adapter (or fully fine-tuned model) is loaded with
      :func:`teachfit.checkpoints.load_for_inference`, its LoRA weights merged
      (:func:`teachfit.checkpoints.merge_lora`), and wrapped
      with :meth:`TransformersBackend.from_loaded` (``batch_size``, ``dtype``, ``device`` from
      ``backend``);
    * ``vllm``: only a fully fine-tuned model (``sft.method: full``), served from its folder;
    * a LoRA adapter with a ``vllm`` entry, or an ``openai`` entry, raises ``ValueError``.

    Writes ``answers`` (Parquet ``id``, ``instruction``, ``response``) in the instructions' order:
    :func:`judge_winrate` reads a row's position as its index in the benchmark (AlpacaEval's
    instruction index).
    """
    cfg = BackendConfig.from_dict(backend)
    final = final_model_dir(sft_dir)
    is_adapter = (final / "adapter_config.json").is_file()
    df = read_parquet(instructions, required=["id", "instruction"])
    if cfg.backend == "transformers":
        model, tokenizer = load_for_inference(sft_dir, model_dir, dtype=cfg.dtype or "float32",
                                              device=cfg.device)
        model, _ = merge_lora(model)
        engine = TransformersBackend.from_loaded(model, tokenizer, batch_size=cfg.batch_size,
                                                 max_length=cfg.max_length, threads=threads)
    elif cfg.backend == "vllm" and not is_adapter:
        engine = cfg.build(final, threads=threads, seed=seed)
    else:
        raise ValueError(
            f"answer_winrate: {final} is a {'LoRA adapter' if is_adapter else 'fine-tuned model'} of "
            f"{model_dir}, whose model entry sets backend {cfg.backend!r}; students are answered with "
            "'transformers' (LoRA adapters or full models) or 'vllm' (full fine-tuning only)")
    prompts = [format_prompt(engine.tokenizer, t, fmt="chat") for t in df["instruction"].to_list()]
    outs = engine.generate(prompts, SamplingConfig(max_new_tokens=max_new_tokens), desc="win-rate answers")
    out = df.select("id", "instruction").with_columns(pl.Series("response", [o[0].text for o in outs]))
    write_parquet(out, answers)
    return out


@dataclass(frozen=True)
class WinrateJudgeSettings:
    """How one benchmark's answers are judged: the rule's ``benchmark`` param, built from
    ``teacher.winrate.benchmarks.<name>`` by ``teachfit.workflow.inputs`` (no defaults here; they
    live in the config schema). Raises ``ValueError`` naming the field on a bad value."""

    name: str = field(metadata={"help": "Benchmark name (key of teacher.winrate.benchmarks)."})
    protocol: str = field(metadata={"help": "Judging protocol.", "choices": PROTOCOLS})
    judge: str = field(metadata={"help": "Judge model alias (AlpacaEval's annotator name)."})
    reference_name: str | None = field(metadata={
        "help": "Name of the reference outputs (AlpacaEval generator_1, Arena-Hard baseline); null = the "
                "reference table's 'generator' column."})
    length_controlled: str = field(metadata={"help": "Length control.", "choices": LENGTH_CONTROL})
    judge_max_new_tokens: int = field(metadata={"help": "Arena-Hard: tokens per judgment."})

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not known; allowed: {', '.join(PROTOCOLS)}")
        if self.length_controlled not in LENGTH_CONTROL:
            raise ValueError(f"length_controlled {self.length_controlled!r} is not known; allowed: "
                             f"{', '.join(LENGTH_CONTROL)}")
        if self.length_controlled == "alpaca_eval" and self.protocol != "alpaca_eval2":
            raise ValueError("length_controlled 'alpaca_eval' needs protocol 'alpaca_eval2' (AlpacaEval's GLM "
                             f"reads its annotations), got {self.protocol!r}")
        if self.protocol == "arena_hard" and self.length_controlled != "none":
            raise ValueError("protocol 'arena_hard' has no length control (Arena-Hard v0.1 reports the raw "
                             "win rate); set length_controlled: none")
        if self.judge_max_new_tokens < 1:
            raise ValueError(f"judge_max_new_tokens must be >= 1, got {self.judge_max_new_tokens}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WinrateJudgeSettings:
        return settings_from_dict(cls, dict(d), "winrate benchmark")


def headline_key(length_controlled: str) -> str:
    """The summary key a benchmark contributes to the teacher study's performance: the LC win rate
    it reports (``lc_win_rate_alpaca_eval`` / ``lc_win_rate_minimal_inhouse``) or the raw
    ``win_rate`` (``none``)."""
    return {"alpaca_eval": "lc_win_rate_alpaca_eval", "inhouse_minimal": "lc_win_rate_minimal_inhouse",
            "none": "win_rate"}[length_controlled]


def judge_winrate(answers: str | Path, reference: str | Path, judge_dir: str | Path, judge_prompt: list[str],
                  summary: str | Path, judged: str | Path, seed: int, backend: dict[str, Any],
                  benchmark: Mapping[str, Any], run: Mapping[str, str],
                  threads: int | None = None) -> dict[str, Any]:
    """Pairwise judgement of a student's answers against one benchmark's reference outputs; rule
    ``judge_winrate``.

    ``answers``: :func:`answer_winrate`'s Parquet, in the benchmark's instruction order (a row's
    position is its ``index``, AlpacaEval's instruction index for its 805 instructions);
    ``reference``: the reference outputs (Parquet ``id``, ``response``, optional ``generator``),
    joined on ``id`` (instructions without a reference are dropped with a warning). ``benchmark``:
    :class:`WinrateJudgeSettings`; ``run``: ``{dataset, generator, selection, base}`` (the model's
    name in the annotations is ``dataset/generator/selection/base``). The judge (``judge_dir``,
    engine settings ``backend``) follows the benchmark's protocol:

    * ``pairwise_ab``: every pair in both orders through
      :func:`teachfit.scoring.label_judge.label_scorer` (:func:`judge_pairs`, order shuffled with
      ``seed``); summary :func:`summarize`.
    * ``alpaca_eval2``: :func:`teachfit.evaluation.alpaca_eval2.annotate` with the judge's top-5
      first-token log-probabilities (:mod:`teachfit.evaluation.winrate_judges`); summary
      :func:`teachfit.evaluation.alpaca_eval2.summarize_annotations` (``stderr`` = its
      ``standard_error``), in-house LC on ``p_win``.
    * ``arena_hard``: :func:`teachfit.evaluation.arena_hard.judge_games` (greedy judgments of
      ``judge_max_new_tokens`` tokens); summary :func:`teachfit.evaluation.arena_hard.arena_hard_score`
      (bootstrap seeded with ``seed``).

    ``judge_prompt``: an optional YAML file (0 or 1 path) with the ``system`` / ``user`` templates
    replacing the project's wording (``alpaca_eval2`` and ``arena_hard`` only;
    :func:`teachfit.evaluation.winrate_judges.load_judge_prompt`).

    Writes ``judged`` (Parquet, one row per pair, or per game for Arena-Hard) and ``summary``
    (JSON: ``benchmark, protocol, judge, reference_name, model_name, n, win_rate`` and the
    protocol's own fields, in-house LC fields unless ``length_controlled: none``; fractions in
    [0, 1]) and returns the summary. Raises ``ValueError`` for a bad setting or a prompt file with
    ``pairwise_ab``, :class:`teachfit.io.DataError` when no reference name can be found.
    """
    settings = WinrateJudgeSettings.from_dict(benchmark)
    if len(judge_prompt) > 1:
        raise ValueError(f"judge_winrate: at most one judge_prompt file, got {judge_prompt}")
    if judge_prompt and settings.protocol == "pairwise_ab":
        raise ValueError("judge_winrate: a judge_prompt file applies to protocols alpaca_eval2 and arena_hard, "
                         f"not pairwise_ab (benchmark {settings.name!r})")
    ans = read_parquet(answers, required=["id", "instruction", "response"])
    ref_raw = read_parquet(reference, required=["id", "response"])
    ref = ref_raw.select("id", pl.col("response").alias("reference"))
    df = ans.join(ref, on="id", how="inner")
    if df.height < ans.height:
        log.warning("win rate: %d of %d instructions have no reference output", ans.height - df.height,
                    ans.height)
    model_name = "/".join(str(run[k]) for k in ("dataset", "generator", "selection", "base"))
    reference_name = settings.reference_name
    if reference_name is None:
        if "generator" not in ref_raw.columns or ref_raw["generator"].n_unique() != 1:
            raise DataError(f"{reference}: benchmark {settings.name!r} sets no reference_name and the reference "
                            "table has no single-valued 'generator' column to take it from")
        reference_name = str(ref_raw["generator"][0])
    head = {"benchmark": settings.name, "protocol": settings.protocol, "judge": settings.judge,
            "reference_name": reference_name, "model_name": model_name}
    lc_on = settings.length_controlled != "none"

    if settings.protocol == "pairwise_ab":
        score_fn = label_scorer(judge_dir, backend, backend["batch_size"], threads)
        table = judge_pairs(df["instruction"].to_list(), df["response"].to_list(), df["reference"].to_list(),
                            score_fn, seed=seed, ids=df["id"].to_list())
        result = {**head, **summarize(table, length_controlled=lc_on)}
    else:
        prompt = load_judge_prompt(judge_prompt[0]) if judge_prompt else None
        df = ans.with_row_index("index").join(ref, on="id", how="inner").sort("index")
        judge = chat_judge(judge_dir, backend, threads=threads, seed=seed)
        if settings.protocol == "alpaca_eval2":
            table = ae.annotate(df["instruction"].to_list(), df["response"].to_list(), df["reference"].to_list(),
                                lambda convs: judge.top_logprobs(convs, ae.TOP_LOGPROBS, ae.JUDGE_TEMPERATURE),
                                ids=df["id"].to_list(), indices=df["index"].to_list(), generator_1=reference_name,
                                generator_2=model_name, annotator=settings.judge, prompt=prompt)
            stats = ae.summarize_annotations(table)
            result = {**head, **stats, "stderr": stats["standard_error"], "winrate_version": WINRATE_VERSION}
            if lc_on:
                fit = table.filter(pl.col("p_win").is_not_nan())
                if fit.height >= 2:
                    result.update(inhouse_lc_fields(fit, target="p_win"))
                else:  # counted in n_unparsed; the fit needs two rows
                    log.warning("win rate %s: %d of %d judgments parsed; no in-house LC fit", settings.name,
                                fit.height, table.height)
                    result.update({"lc_win_rate_minimal_inhouse": float("nan"), "lc_stderr_minimal_inhouse": float("nan"),
                                   "lc_length_coef_minimal_inhouse": float("nan"), "lc_target_minimal_inhouse": "p_win"})
        else:
            table = ah.judge_games(df["instruction"].to_list(), df["response"].to_list(), df["reference"].to_list(),
                                   lambda convs: judge.chat(convs, settings.judge_max_new_tokens, ah.JUDGE_TEMPERATURE),
                                   ids=df["id"].to_list(), prompt=prompt)
            result = {**head, **ah.arena_hard_score(table, seed=seed), "n": df.height,
                      "avg_len_model": float(df["response"].str.len_chars().mean()),
                      "avg_len_ref": float(df["reference"].str.len_chars().mean()),
                      "winrate_version": WINRATE_VERSION}
    write_parquet(table, judged)
    write_json(result, summary)
    return result
