"""The rules' input and params functions: which files and settings a job of a rule gets.

Each function takes the validated config, the :class:`~teachfit.workflow.plan.Plan` of that
config and the job's wildcards (any object with the rule's wildcards as attributes: Snakemake's
``Wildcards``, or a ``types.SimpleNamespace`` in tests), and returns a path, a list of paths
(:mod:`teachfit.workflow.paths`) or a params value. The rule files bind them to the config once
(:func:`bind`), so a rule names a one-argument function of its wildcards::

    selection_scores = bind(inputs.selection_scores)   # rules/common.smk
    rule select_trainset:
        input: scores=selection_scores

Functions whose answer depends on a checkpoint's output take it as a callable: ``ranked``
(:data:`teachfit.workflow.plan.Ranked`, the evolvers rule ``merge_evolved`` ranked) or
``pool_rows`` (the size of an evolver's pool, rule ``pool_evolved``). Metadata travels as params
aligned with the inputs: each pair (e.g. :func:`teacher_winrate_runs` / :func:`teacher_winrates`)
is built from one list, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from teachfit.evaluation.winrate import headline_key
from teachfit.generation.dataset import source_label
from teachfit.generation.engines import backend_settings
from teachfit.generation.per_instruction import SCORED_CRITERIA
from teachfit.generation.per_instruction import source_label as per_instruction_label
from teachfit.io import package_data
from teachfit.scoring.losses import convention_settings
from teachfit.studies.recommend import select_data_convention
from teachfit.workflow import paths
from teachfit.workflow.plan import Plan, Ranked, Run, evolved_name, pool_name

Config = dict[str, Any]
#: a job's wildcards: an object with one attribute per wildcard of the rule
Wildcards = Any
#: ``pool_rows(seedset, scenario, evolver) -> rows`` of an evolver's pool (checkpoint pool_evolved)
PoolRows = Callable[[str, str, str], int]

#: the reading settings of a select_data entry (not its metric: changing that re-runs select_data only)
SELECT_DATA_FIELDS = ("format", "instruction_field", "input_field", "response_field", "messages_field")


def bind(fn: Callable[..., Any], config: Config, plan: Plan, **extra: Any) -> Callable[[Wildcards], Any]:
    """``fn`` as a Snakemake input / params function of the wildcards alone:
    ``wildcards -> fn(config, plan, wildcards, **extra)``, under ``fn``'s name and docstring."""

    def input_function(wildcards: Wildcards) -> Any:
        return fn(config, plan, wildcards, **extra)

    input_function.__name__ = input_function.__qualname__ = fn.__name__
    input_function.__doc__ = fn.__doc__
    return input_function


# --------------------------------------------------------------------------- shared
def backend_config(config: Config, alias: str) -> dict[str, Any]:
    """Engine settings of model ``alias`` (:func:`teachfit.generation.engines.backend_settings`)."""
    return backend_settings(config["models"][alias], config["generation"])


def wildcard_run(wildcards: Wildcards) -> Run:
    """The SFT run of a job's ``dataset``, ``generator``, ``selection``, ``base`` wildcards."""
    return Run(wildcards.dataset, wildcards.generator, wildcards.selection, wildcards.base)


def model_entry(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return config["models"][wildcards.model]


def model_backend(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return backend_config(config, wildcards.model)


def model_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(wildcards.model)


def generator_entry(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return config["generators"][wildcards.generator]


def generator_select(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return config["generators"][wildcards.generator]["select"]


def generator_model_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(config["generators"][wildcards.generator]["model"])


def generator_backend(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return backend_config(config, config["generators"][wildcards.generator]["model"])


def base_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(wildcards.base)


def base_backend(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return backend_config(config, wildcards.base)


def run_label(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, str]:
    """The SFT run a job belongs to, as metadata (never parsed back from paths)."""
    return {"dataset": wildcards.dataset, "generator": wildcards.generator,
            "selection": wildcards.selection, "base": wildcards.base}


def seedset_entry(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return config["seedsets"][wildcards.seedset]


def seedset_file(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    """The seed set's configured ``path``, else its hub download (rule download_seedset)."""
    entry = config["seedsets"][wildcards.seedset]
    if entry.get("path"):
        return entry["path"]
    return paths.downloaded_seeds(wildcards.seedset)


def instructions_file(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.instructions(wildcards.dataset)


def scorer_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(wildcards.scorer)


def reward_model_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(plan.reward_model(wildcards.dataset))


def reward_settings(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return plan.reward_settings(wildcards.dataset)


def selection_settings(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return plan.selection_settings(wildcards.selection)


def scoring_settings(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    """The scoring job's settings: the scoring section narrowed to its convention."""
    return convention_settings(config["scoring"], wildcards.convention)


def selection_scores(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """Scores the selection method needs (none for random / full data)."""
    key = plan.selection_scorer(wildcards.selection)
    if key is None:
        return []
    return [paths.scores(wildcards.dataset, wildcards.generator, key["scorer"], key["convention"])]


# --------------------------------------------------------------------------- targets, evaluation
def final_outputs(plan: Plan) -> list[str]:
    """Every target but the per-run IFS figures of the evolved sets (:func:`evolved_run_figures`)."""
    return plan.final_outputs(ranked=lambda seedset, scenario: ())


def evolved_run_figures(config: Config, plan: Plan, wildcards: Wildcards, ranked: Ranked) -> list[str]:
    """The per-run IFS figures of the ranked evolvers' sets (checkpoint merge_evolved); kept out
    of :func:`final_outputs` so that a dry run still lists every other job before the checkpoint
    runs."""
    evolved = set(plan.evolved_datasets())
    return [paths.ifs_figure(r.path) for r in plan.ifs_runs(ranked) if r.dataset in evolved]


def selected_checkpoint_input(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """The IFS-selected checkpoint, when only final + selected are evaluated and the run has an
    IFS curve (ifs.runs)."""
    if config["eval"]["checkpoints"] != "final_and_selected":
        return []
    run = wildcard_run(wildcards)
    if not plan.has_ifs_curve(run):
        return []
    return [paths.ifs_checkpoint(run.path, ".selected.json")]


def run_eval_settings(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    """The eval section for one run: final_and_selected becomes final for a run without an IFS
    curve (ifs.runs), whose selected checkpoint does not exist."""
    e = dict(config["eval"])
    if e["checkpoints"] == "final_and_selected" and not plan.has_ifs_curve(wildcard_run(wildcards)):
        e["checkpoints"] = "final"
    return e


def summary_run_evals(config: Config, plan: Plan, wildcards: Wildcards, ranked: Ranked) -> list[str]:
    """The evaluation table of every trained run (:meth:`Plan.trained_runs`)."""
    return [paths.run_eval(r.path) for r in plan.trained_runs(ranked)]


def summary_model_evals(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return [paths.model_eval(m) for m in plan.names["eval_models"]]


# --------------------------------------------------------------------------- teacher study
def teacher_generators(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return list(config["teacher"]["generators"])


def teacher_bases(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return list(config["teacher"]["bases"])


def teacher_reference_model(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return config["teacher"]["reference_model"]


def teacher_responses(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """The responses of each generator (aligned with :func:`teacher_generators`)."""
    t = config["teacher"]
    return [paths.responses(t["instructions"], g) for g in teacher_generators(config, plan, wildcards)]


def teacher_score_keys(config: Config, plan: Plan, wildcards: Wildcards) -> list[dict[str, str]]:
    """One {generator, scorer, convention} per scores file (:meth:`Plan.teacher_score_keys`)."""
    return plan.teacher_score_keys()


def teacher_scores(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """The scores file of each :func:`teacher_score_keys` entry (aligned)."""
    t = config["teacher"]
    return [paths.scores(t["instructions"], k["generator"], k["scorer"], k["convention"])
            for k in teacher_score_keys(config, plan, wildcards)]


def teacher_conventions(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, str]:
    """Which convention feeds which data metric: {"car": ..., "ifd": ...}."""
    t = config["teacher"]
    return {"car": t["car"]["convention"], "ifd": t["ifd_convention"]}


def teacher_evals(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    t = config["teacher"]
    return [paths.run_eval(paths.run_stem(t["instructions"], g, "full", b))
            for g in t["generators"] for b in t["bases"]]


def winrate_benchmark(config: Config, name: str) -> dict[str, Any]:
    """The validated ``teacher.winrate.benchmarks.<name>`` section."""
    return config["teacher"]["winrate"]["benchmarks"][name]


def teacher_winrate_runs(config: Config, plan: Plan, wildcards: Wildcards) -> list[dict[str, str]]:
    """One {base, generator, benchmark, headline} per win-rate summary (none when the win rate is
    off); headline = the summary key that counts in the performance average."""
    t = config["teacher"]
    return [
        {"base": b, "generator": g, "benchmark": name,
         "headline": headline_key(winrate_benchmark(config, name)["length_controlled"])}
        for name in plan.winrate_benchmarks()
        for g in t["generators"]
        for b in t["bases"]
    ]


def teacher_winrates(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """The summary of each run of :func:`teacher_winrate_runs` (aligned): the judge's, or rule
    alpaca_eval_lc's when the benchmark reports AlpacaEval's own LC."""
    t = config["teacher"]
    out = []
    for r in teacher_winrate_runs(config, plan, wildcards):
        run = paths.run_stem(t["instructions"], r["generator"], "full", r["base"])
        lc = winrate_benchmark(config, r["benchmark"])["length_controlled"]
        out.append(paths.winrate(r["benchmark"], run, ".alpaca_eval.json" if lc == "alpaca_eval" else ".json"))
    return out


def winrate_part_file(config: Config, benchmark: str, part: str) -> str:
    """The Parquet of a benchmark's ``part`` (``instructions`` | ``reference``): a seed set's
    prepared instructions, a generator's responses to them, or the download of a hub file."""
    b = winrate_benchmark(config, benchmark)
    source = b[part]
    if "seedset" in source:
        return paths.instructions(source["seedset"])
    if "generator" in source:
        return paths.responses(b["instructions"]["seedset"], source["generator"])
    return paths.winrate_data(benchmark, part)


def winrate_instructions(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return winrate_part_file(config, wildcards.benchmark, "instructions")


def winrate_reference(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return winrate_part_file(config, wildcards.benchmark, "reference")


def winrate_hub_source(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return winrate_benchmark(config, wildcards.benchmark)[wildcards.part]["hub"]


def winrate_max_new_tokens(config: Config, plan: Plan, wildcards: Wildcards) -> int:
    return winrate_benchmark(config, wildcards.benchmark)["max_new_tokens"]


def winrate_judge_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(winrate_benchmark(config, wildcards.benchmark)["judge"])


def winrate_judge_backend(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return backend_config(config, winrate_benchmark(config, wildcards.benchmark)["judge"])


def winrate_judge_prompt(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    path = winrate_benchmark(config, wildcards.benchmark)["judge_prompt"]
    return [path] if path else []


def winrate_judge_settings(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    """:class:`teachfit.evaluation.winrate.WinrateJudgeSettings` of the benchmark (judging only:
    answer lengths and data sources are other rules' params and inputs)."""
    b = winrate_benchmark(config, wildcards.benchmark)
    reference_name = b["reference_name"]
    if reference_name is None and "generator" in b["reference"]:
        reference_name = b["reference"]["generator"]
    return {
        "name": wildcards.benchmark,
        "protocol": b["protocol"],
        "judge": b["judge"],
        "reference_name": reference_name,
        "length_controlled": b["length_controlled"],
        "judge_max_new_tokens": b["judge_max_new_tokens"],
    }


def winrate_glm(config: Config, plan: Plan, wildcards: Wildcards) -> Any:
    return winrate_benchmark(config, wildcards.benchmark)["alpaca_eval_glm"]


# --------------------------------------------------------------------------- evolver study
def evolver_teacher(config: Config) -> str:
    """The generator answering every evolved set (``none`` when the study is off, so that rule
    split_evolved's output pattern still has a name)."""
    return config["evolver"]["teacher"] if config["evolver"]["activate"] else "none"


def autoif_seed_instructions(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    path = config["evolver"]["scenarios"]["autoif"]["seed_instructions"]
    return path or str(package_data("autoif_seed_instructions.txt"))


def previous_round(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    """Round 1 evolves the seed set; round k the valid instructions of round k-1 (gate_instructions)."""
    k = int(wildcards.k)
    if k == 1:
        return paths.instructions(wildcards.seedset)
    return paths.evolved_round(wildcards.seedset, wildcards.evolver, wildcards.scenario, k - 1)


def evolver_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(wildcards.evolver)


def evolver_backend(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return backend_config(config, wildcards.evolver)


def evolver_prompt_format(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    """Instruct evolvers get their chat template, base evolvers a plain few-shot prompt."""
    kind = config["models"][wildcards.evolver]["kind"]
    return "chat" if kind == "instruct" else "fewshot"


def evolution_round(config: Config, plan: Plan, wildcards: Wildcards) -> int:
    return int(wildcards.k)


def evolution_settings(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return plan.evolution_settings(wildcards.scenario)


def autoif_settings(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return plan.evolution_settings("autoif")


def round_file(r: dict[str, Any], suffix: str = ".parquet") -> str:
    """The round file of one :meth:`Plan.evolution_rounds` entry."""
    return paths.evolved_round(r["seedset"], r["evolver"], r["scenario"], r["round"], suffix)


def evolver_round_info(config: Config, plan: Plan, wildcards: Wildcards) -> list[dict[str, Any]]:
    """seedset, scenario, evolver and round of each valid-instruction file of one evolver
    (aligned with :func:`evolver_round_files`)."""
    return [r for r in plan.evolution_rounds(wildcards.seedset, wildcards.scenario)
            if r["evolver"] == wildcards.evolver]


def evolver_round_files(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return [round_file(r) for r in evolver_round_info(config, plan, wildcards)]


def pool_responses(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    pool = pool_name(wildcards.seedset, wildcards.scenario, wildcards.evolver)
    return paths.responses(pool, evolver_teacher(config))


def answered_evolvers(config: Config, plan: Plan, wildcards: Wildcards, pool_rows: PoolRows) -> list[str]:
    """The evolvers of a scenario whose pool holds at least evolver.min_valid instructions, so
    the teacher answers it (checkpoint pool_evolved)."""
    return [ev for ev in plan.scenario_evolvers(wildcards.scenario)
            if pool_rows(wildcards.seedset, wildcards.scenario, ev) >= config["evolver"]["min_valid"]]


def answered_sets(config: Config, plan: Plan, wildcards: Wildcards, pool_rows: PoolRows) -> list[str]:
    return [paths.evolver_file(wildcards.seedset, ev, wildcards.scenario, "answered.parquet")
            for ev in answered_evolvers(config, plan, wildcards, pool_rows)]


def answered_drops(config: Config, plan: Plan, wildcards: Wildcards, pool_rows: PoolRows) -> list[str]:
    return [paths.evolver_file(wildcards.seedset, ev, wildcards.scenario, "answered.drops.json")
            for ev in answered_evolvers(config, plan, wildcards, pool_rows)]


def pool_summaries(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return [paths.evolver_file(wildcards.seedset, ev, wildcards.scenario, "pool.json")
            for ev in plan.scenario_evolvers(wildcards.scenario)]


def merged_round_info(config: Config, plan: Plan, wildcards: Wildcards) -> list[dict[str, Any]]:
    """seedset, scenario, evolver and round of each file of :func:`evolved_round_drops` (aligned)."""
    return plan.evolution_rounds(wildcards.seedset, wildcards.scenario)


def evolved_round_drops(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return [round_file(r, ".drops.json") for r in merged_round_info(config, plan, wildcards)]


def scenario_evolvers(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return plan.scenario_evolvers(wildcards.scenario)


def evolver_teacher_responses(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.responses(wildcards.dataset, evolver_teacher(config))


def evolver_judge_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(config["evolver"]["judge"])


def evolver_judge_backend(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return backend_config(config, config["evolver"]["judge"])


def evolver_embed_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(config["evolver"]["embedding_model"])


def evolved_stats(config: Config, plan: Plan, wildcards: Wildcards, ranked: Ranked) -> list[str]:
    """The statistics of every ranked evolver's set."""
    return [paths.stats(evolved_name(s, sc, ev)) for s, sc, ev in plan.evolved if ev in ranked(s, sc)]


def evolved_drop_sets(config: Config, plan: Plan, wildcards: Wildcards) -> list[dict[str, str]]:
    """seedset and scenario of each drop table / ranking file (aligned)."""
    return [{"seedset": s, "scenario": sc}
            for s in config["evolver"]["seedsets"] for sc in plan.active_scenarios()]


def evolved_drop_tables(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return [paths.scenario_file(d["seedset"], d["scenario"], ".drops.parquet")
            for d in evolved_drop_sets(config, plan, wildcards)]


def evolved_rankings(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return [paths.scenario_file(d["seedset"], d["scenario"], ".ranking.json")
            for d in evolved_drop_sets(config, plan, wildcards)]


def _run_eval(run: dict[str, Any]) -> str:
    return paths.run_eval(paths.run_stem(run["dataset"], run["generator"], run["selection"], run["base"]))


def evolver_comparison_runs(config: Config, plan: Plan, wildcards: Wildcards,
                            ranked: Ranked) -> list[dict[str, Any]]:
    return plan.evolver_runs("comparison", ranked)


def evolver_comparison_evals(config: Config, plan: Plan, wildcards: Wildcards, ranked: Ranked) -> list[str]:
    return [_run_eval(r) for r in evolver_comparison_runs(config, plan, wildcards, ranked)]


def evolver_selection_runs(config: Config, plan: Plan, wildcards: Wildcards,
                           ranked: Ranked) -> list[dict[str, Any]]:
    return plan.evolver_runs("selection", ranked)


def evolver_selection_evals(config: Config, plan: Plan, wildcards: Wildcards, ranked: Ranked) -> list[str]:
    return [_run_eval(r) for r in evolver_selection_runs(config, plan, wildcards, ranked)]


def evolver_selection_trainsets(config: Config, plan: Plan, wildcards: Wildcards, ranked: Ranked) -> list[str]:
    """The trainset of each selection run (aligned with :func:`evolver_selection_runs`): its
    counts (candidates, dropped, truncated) go into selection_comparison.csv."""
    return [paths.trainset(r["dataset"], r["generator"], r["selection"])
            for r in evolver_selection_runs(config, plan, wildcards, ranked)]


def top1_round_info(config: Config, plan: Plan, wildcards: Wildcards) -> list[dict[str, Any]]:
    """seedset, scenario, evolver and round of each file of :func:`top1_files` (aligned)."""
    return plan.evolution_rounds(top1=True)


def top1_files(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return [round_file(r, ".top1.parquet") for r in top1_round_info(config, plan, wildcards)]


# --------------------------------------------------------------------------- IFS study
def tone_pairs(config: Config, plan: Plan, wildcards: Wildcards, ranked: Ranked) -> list[str]:
    """A configured file, one generator's responses, or (default) every kept response the
    pipeline has (teacher generators and the evolver teacher on every evolved set of a ranked
    evolver); plus, when ifs.pairs.answers is set, one generator's answers to one seed set (e.g.
    SmolLM2 on the project's tone instructions), read from its generations (no reward scoring
    needed)."""
    f = config["ifs"]["pairs"]
    if f["path"]:
        files = [f["path"]]
    elif f["generator"]:
        files = [paths.responses(config["teacher"]["instructions"], f["generator"])]
    else:
        files = sorted({paths.responses(r.dataset, r.generator) for r in plan.trained_runs(ranked)})
    a = f["answers"]
    if a["seedset"] and a["generator"]:
        files.append(paths.generations(a["seedset"], a["generator"]))
    return files


def tone_encoder_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(config["ifs"]["classifier"]["encoder"])


def ifs_prompt_source(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    """The IFS instruction file: ifs.prompts.path, else the package's own set."""
    return config["ifs"]["prompts"]["path"] or str(package_data("ifs_prompts.jsonl"))


def objecqa_questions(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return str(package_data("objecqa.jsonl"))


def objecqa_calibration(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """The ObjecQA judge's calibration, when ObjecQA runs (no file otherwise)."""
    return [paths.ifs_file("objecqa_judge.json")] if config["ifs"]["objecqa"]["activate"] else []


def objecqa_judge_set(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    """The project's labelled answers (calibration and held-out splits) for the ObjecQA judge."""
    return str(package_data("objecqa_judge_set.jsonl"))


def objecqa_judge_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(config["ifs"]["objecqa"]["judge"])


def ifs_judge_backend(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return backend_config(config, config["ifs"]["objecqa"]["judge"])


def ifs_tables_input(config: Config, plan: Plan, wildcards: Wildcards, ranked: Ranked) -> dict[str, list[str]]:
    """The named inputs of rule build_ifs_tables, over the ranked evolvers' runs (checkpoint
    merge_evolved) that have an IFS curve."""
    runs = plan.ifs_runs(ranked)
    return {
        "model_scores": [paths.ifs_scores(paths.ifs_model_target(m)) for m in plan.names["ifs_models"]],
        "curves": [paths.ifs_checkpoint(r.path) for r in runs],
        "run_scores": [paths.ifs_scores(paths.ifs_run_target(r.path)) for r in runs],
        "evals": [paths.run_eval(r.path) for r in runs],
        "eval_dirs": [paths.run_eval_dir(r.path) for r in runs],
    }


# --------------------------------------------------------------------------- recommend
def dataset_generator_entry(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return config["generators"][wildcards.generator]["dataset"]


def dataset_generator_source(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    """The dataset generator's configured ``path``, else its hub download."""
    entry = dataset_generator_entry(config, plan, wildcards)
    if entry.get("path"):
        return entry["path"]
    return paths.downloaded_generator(wildcards.generator)


def ranking_generators(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return list(config["teacher"]["generators"])


def ranking_sources(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, str]:
    """Where each candidate's responses come from: ``model <alias>`` or ``dataset <file>``."""
    out = {}
    for g in config["teacher"]["generators"]:
        entry = config["generators"][g]
        if entry["kind"] == "dataset":
            out[g] = f"dataset {source_label(entry['dataset'])}"
        elif entry["kind"] == "per_instruction":
            out[g] = per_instruction_label(entry["per_instruction"])
        else:
            out[g] = f"model {entry['model']}"
    return out


def ranking_join_generators(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    return [g for g in config["teacher"]["generators"] if config["generators"][g]["kind"] == "dataset"]


def ranking_join_reports(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """The join report of each dataset generator (aligned with :func:`ranking_join_generators`)."""
    t = config["teacher"]
    return [paths.join_report(t["instructions"], g) for g in ranking_join_generators(config, plan, wildcards)]


def ranking_measured(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """The full study's performance table, only when teacher.ranking.measured is on."""
    if plan.ranking_measured():
        return [paths.table("teacher_performance")]
    return []


def select_data_entry(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    return config["select_data"][wildcards.name]


def select_data_fields(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    """The reading settings of a select_data entry (:data:`SELECT_DATA_FIELDS`)."""
    entry = select_data_entry(config, plan, wildcards)
    return {k: entry[k] for k in SELECT_DATA_FIELDS}


def select_data_source(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    entry = select_data_entry(config, plan, wildcards)
    if entry.get("path"):
        return entry["path"]
    return paths.downloaded_select_data(wildcards.name)


def select_data_student(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return select_data_entry(config, plan, wildcards)["student"]


def select_data_student_dir(config: Config, plan: Plan, wildcards: Wildcards) -> str:
    return paths.model(select_data_student(config, plan, wildcards))


def select_data_scoring(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    """The scoring job settings of the entry's convention
    (:func:`teachfit.studies.recommend.select_data_convention`)."""
    return convention_settings(config["scoring"], select_data_convention(select_data_entry(config, plan, wildcards)))


def select_data_settings(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    entry = select_data_entry(config, plan, wildcards)
    return {"metric": entry["metric"], "top_percent": float(entry["top_percent"]),
            "per_instruction": entry["per_instruction"]}


# --------------------------------------------------------------------------- per_instruction (rule mix_responses)
def per_instruction_entry(config: Config, plan: Plan, wildcards: Wildcards) -> dict[str, Any]:
    """The validated ``generators.<generator>.per_instruction`` section."""
    return config["generators"][wildcards.generator]["per_instruction"]


def per_instruction_names(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """The candidate generators of a per_instruction generator, in tie-break order."""
    return list(per_instruction_entry(config, plan, wildcards)["generators"])


def per_instruction_candidates(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """Each candidate's kept responses (aligned with :func:`per_instruction_names`)."""
    return [paths.responses(wildcards.dataset, g) for g in per_instruction_names(config, plan, wildcards)]


def per_instruction_scores(config: Config, plan: Plan, wildcards: Wildcards) -> list[str]:
    """Each candidate's responses scored by the entry's student under its convention (aligned
    with :func:`per_instruction_names`); none for a criterion that needs no scores (``reward``)."""
    e = per_instruction_entry(config, plan, wildcards)
    if e["criterion"] not in SCORED_CRITERIA:
        return []
    return [paths.scores(wildcards.dataset, g, e["student"], e["convention"])
            for g in per_instruction_names(config, plan, wildcards)]
