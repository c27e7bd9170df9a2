"""The path grammar: where each artifact of the workflow lives, one function per artifact.

Every path is ``results/<stage>/<wildcard dirs>/<artifact>.<ext>``. The rules' input functions
(:mod:`teachfit.workflow.inputs`), the final targets (:meth:`teachfit.workflow.plan.Plan.final_outputs`)
and the rules' ``input:`` / ``output:`` patterns all build paths here, so each template is written
once: a rule calls the same function with wildcard placeholders, e.g.
``responses("{dataset}", "{generator}")`` is the pattern ``results/responses/{dataset}/{generator}.parquet``.

An SFT run is addressed by its stem ``<dataset>/<generator>/<selection>/<base>`` (:func:`run_stem`,
:attr:`teachfit.workflow.plan.Run.path`; :data:`RUN` is its wildcard pattern). Functions with a
``suffix`` address sibling files of one artifact (the suffixes they take are listed in each
docstring). Logs and benchmarks mirror a rule's output wildcards under ``results/logs/<rule>/``
and ``results/benchmarks/<rule>/`` and are written in the rule itself (each belongs to one rule).

Pure string functions: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

RESULTS = "results"


def run_stem(dataset: str, generator: str, selection: str, base: str) -> str:
    """``<dataset>/<generator>/<selection>/<base>``: one SFT run (base fine-tuned on a trainset)."""
    return f"{dataset}/{generator}/{selection}/{base}"


#: the wildcard pattern of :func:`run_stem`
RUN = run_stem("{dataset}", "{generator}", "{selection}", "{base}")


# --------------------------------------------------------------------------- models, seeds
def model(model: str) -> str:
    """``results/models/<model>``: a materialized model alias (safetensors + tokenizer + manifest)."""
    return f"{RESULTS}/models/{model}"


def downloaded_seeds(seedset: str) -> str:
    """``results/seeds/<seedset>.parquet``: a hub seed set as downloaded (before prepare_seeds)."""
    return f"{RESULTS}/seeds/{seedset}.parquet"


def instructions(dataset: str) -> str:
    """``results/instructions/<dataset>.parquet``: a seed set, an evolver's pool or evolved set."""
    return f"{RESULTS}/instructions/{dataset}.parquet"


# --------------------------------------------------------------------------- responses
def generations(dataset: str, generator: str) -> str:
    """``results/generations/<dataset>/<generator>.parquet``: all n samples per instruction."""
    return f"{RESULTS}/generations/{dataset}/{generator}.parquet"


def join_report(dataset: str, generator: str) -> str:
    """``results/generations/<dataset>/<generator>.join.json``: a dataset generator's join counts."""
    return f"{RESULTS}/generations/{dataset}/{generator}.join.json"


def choice_report(dataset: str, generator: str) -> str:
    """``results/generations/<dataset>/<generator>.choice.json``: a per_instruction generator's
    counts of responses chosen per candidate and of skipped instructions."""
    return f"{RESULTS}/generations/{dataset}/{generator}.choice.json"


def rewards(dataset: str, generator: str) -> str:
    """``results/rewards/<dataset>/<generator>.parquet``: the reward of each sample."""
    return f"{RESULTS}/rewards/{dataset}/{generator}.parquet"


def responses(dataset: str, generator: str) -> str:
    """``results/responses/<dataset>/<generator>.parquet``: the kept response per instruction."""
    return f"{RESULTS}/responses/{dataset}/{generator}.parquet"


def downloaded_generator(generator: str) -> str:
    """``results/raw/generators/<generator>.parquet``: a dataset generator's hub download."""
    return f"{RESULTS}/raw/generators/{generator}.parquet"


# --------------------------------------------------------------------------- scores, training, eval
def scores(dataset: str, generator: str, scorer: str, convention: str) -> str:
    """``results/scores/<dataset>/<generator>/<scorer>.<convention>.parquet``: L(Q), L(A|Q), L(A)
    (nats per token) of a generator's responses under one scorer and convention."""
    return f"{RESULTS}/scores/{dataset}/{generator}/{scorer}.{convention}.parquet"


def trainset(dataset: str, generator: str, selection: str) -> str:
    """``results/trainsets/<dataset>/<generator>/<selection>.parquet``."""
    return f"{RESULTS}/trainsets/{dataset}/{generator}/{selection}.parquet"


def sft(run: str) -> str:
    """``results/sft/<run>``: the adapter and the kept checkpoints of a run (:func:`run_stem`)."""
    return f"{RESULTS}/sft/{run}"


def train_log(run: str) -> str:
    """``results/sft/<run>.train_log.parquet``: the trainer's log of a run."""
    return f"{RESULTS}/sft/{run}.train_log.parquet"


def run_eval_dir(run: str) -> str:
    """``results/eval/<run>``: lm-eval JSON per evaluated checkpoint of a run."""
    return f"{RESULTS}/eval/{run}"


def run_eval(run: str) -> str:
    """``results/eval/<run>.parquet``: a run's evaluations as one tidy table."""
    return f"{RESULTS}/eval/{run}.parquet"


def model_eval(model: str, suffix: str = ".parquet") -> str:
    """``results/eval/models/<model><suffix>``: lm-eval on a base / instruct model; suffix
    ``.json`` (lm-eval's results), ``.samples.jsonl``, ``.parquet`` (tidy table)."""
    return f"{RESULTS}/eval/models/{model}{suffix}"


# --------------------------------------------------------------------------- teacher study
def data_metrics(study: str) -> str:
    """``results/metrics/<study>/data_metrics.parquet``: the data metrics of a study."""
    return f"{RESULTS}/metrics/{study}/data_metrics.parquet"


def winrate(benchmark: str, run: str, suffix: str = ".json") -> str:
    """``results/winrate/<benchmark>/<run><suffix>``: a run on a win-rate benchmark; suffix
    ``.answers.parquet``, ``.parquet`` (judged pairs), ``.json`` (judge's summary),
    ``.alpaca_eval.json`` (AlpacaEval's own LC)."""
    return f"{RESULTS}/winrate/{benchmark}/{run}{suffix}"


def winrate_data(benchmark: str, part: str) -> str:
    """``results/winrate_data/<benchmark>/<part>.parquet``: a hub file of a benchmark
    (part ``instructions`` | ``reference``)."""
    return f"{RESULTS}/winrate_data/{benchmark}/{part}.parquet"


# --------------------------------------------------------------------------- evolver study
def evolved_round(seedset: str, evolver: str, scenario: str, k: int | str,
                  suffix: str = ".parquet") -> str:
    """``results/evolved/<seedset>/<evolver>/<scenario>/round<k><suffix>``: one evolution round;
    suffix ``.parquet`` (valid instructions), ``.replies.parquet``, ``.top1.parquet``,
    ``.gate.parquet``, ``.drops.json``."""
    return f"{RESULTS}/evolved/{seedset}/{evolver}/{scenario}/round{k}{suffix}"


def evolver_file(seedset: str, evolver: str, scenario: str, name: str) -> str:
    """``results/evolved/<seedset>/<evolver>/<scenario>/<name>``: an evolver's per-scenario file;
    name ``pool.json``, ``answered.parquet``, ``answered.drops.json``, ``verifiers.parquet``."""
    return f"{RESULTS}/evolved/{seedset}/{evolver}/{scenario}/{name}"


def scenario_file(seedset: str, scenario: str, suffix: str = ".merged.parquet") -> str:
    """``results/evolved/<seedset>/<scenario><suffix>``: a scenario's merge of its evolvers;
    suffix ``.merged.parquet``, ``.drops.parquet``, ``.ranking.json``."""
    return f"{RESULTS}/evolved/{seedset}/{scenario}{suffix}"


def stats(dataset: str) -> str:
    """``results/stats/<dataset>.parquet``: instruction statistics of a data set."""
    return f"{RESULTS}/stats/{dataset}.parquet"


# --------------------------------------------------------------------------- IFS study
def ifs_file(name: str) -> str:
    """``results/ifs/<name>``: a study-wide IFS file; name ``tone_data.parquet``, ``classifier``
    (folder), ``prompts.parquet``, ``objecqa_judge.json``."""
    return f"{RESULTS}/ifs/{name}"


def ifs_model_target(model: str) -> str:
    """``models/<model>``: the IFS target of a model (:func:`ifs_answers`, :func:`ifs_scores`)."""
    return f"models/{model}"


def ifs_run_target(run: str) -> str:
    """``runs/<run>``: the IFS target of a run's checkpoints."""
    return f"runs/{run}"


def ifs_answers(target: str) -> str:
    """``results/ifs/answers/<target>.parquet``: a model's or a run's answers to the IFS prompts."""
    return f"{RESULTS}/ifs/answers/{target}.parquet"


def ifs_scores(target: str) -> str:
    """``results/ifs/scores/<target>.parquet``: IFS and ObjecQA scores of :func:`ifs_answers`."""
    return f"{RESULTS}/ifs/scores/{target}.parquet"


def ifs_checkpoint(run: str, suffix: str = ".parquet") -> str:
    """``results/ifs/checkpoints/<run><suffix>``: a run's IFS curve (``.parquet``) and selected
    checkpoint (``.selected.json``)."""
    return f"{RESULTS}/ifs/checkpoints/{run}{suffix}"


# --------------------------------------------------------------------------- recommend, tables, figures
def select_data(name: str, artifact: str) -> str:
    """``results/select_data/<name>/<artifact>``: a user data set; artifact ``pairs.parquet``,
    ``rejected.parquet``, ``scores.parquet``, ``selected.jsonl``, ``decisions.csv``."""
    return f"{RESULTS}/select_data/{name}/{artifact}"


def downloaded_select_data(name: str) -> str:
    """``results/raw/select_data/<name>.parquet``: a select_data entry's hub download."""
    return f"{RESULTS}/raw/select_data/{name}.parquet"


def table(name: str) -> str:
    """``results/tables/<name>.csv``."""
    return f"{RESULTS}/tables/{name}.csv"


def figure(name: str) -> str:
    """``results/figures/<name>.png`` (name = ``<study>/<figure>``)."""
    return f"{RESULTS}/figures/{name}.png"


def ifs_figure(run: str) -> str:
    """``results/figures/ifs/<run>.png``: a run's IFS curve."""
    return figure(f"ifs/{run}")


def grammar() -> list[tuple[str, str]]:
    """``(function, pattern)`` of every artifact function above, in definition order: each
    parameter filled with its own placeholder (``{dataset}``; ``suffix`` keeps its default).
    docs/dag.md's table and the Snakefile's top comment are checked against it."""
    import inspect
    import sys

    module = sys.modules[__name__]
    out = []
    for name, fn in vars(module).items():
        if (not inspect.isfunction(fn) or fn.__module__ != __name__ or name.startswith("_")
                or name in ("grammar", "run_stem", "ifs_model_target", "ifs_run_target")):
            continue
        params = inspect.signature(fn).parameters.values()
        out.append((name, fn(*[f"{{{p.name}}}" for p in params if p.default is inspect.Parameter.empty])))
    return out
