# Config loading and validation, wildcard constraints, input functions.
# The teachfit package is installed in every environment that runs this workflow (the local
# venv: `make setup`; conda envs: `-e ..` in envs/*.yaml); nothing here edits sys.path.
from teachfit.schema import check_duplicate_keys
from teachfit.workflow.config import validate_config
from teachfit.workflow import plan
from teachfit.workflow.resources import job_gpus
from teachfit.io import package_data, read_json
from teachfit.generation.engines import backend_settings
from teachfit.scoring.losses import convention_settings
from teachfit.evaluation.winrate import headline_key

check_duplicate_keys(workflow.configfiles)
validate_config(config)
PLAN = plan.build_plan(config)


wildcard_constraints:
    model=PLAN.alternation("models"),
    dataset=PLAN.alternation("datasets"),
    seedset=PLAN.alternation("seedsets"),
    generator=PLAN.alternation("generators"),
    base=PLAN.alternation("students"),
    scorer=PLAN.alternation("models"),
    selection=PLAN.alternation("selections"),
    evolver=PLAN.alternation("evolvers"),
    scenario=PLAN.alternation("scenarios"),
    convention=PLAN.alternation("conventions"),
    k=r"\d+",
    benchmark=PLAN.alternation("benchmarks"),
    part="instructions|reference",


def model_dir(alias):
    return f"results/models/{alias}"


def model_entry(wildcards):
    return config["models"][wildcards.model]


def generator_entry(wildcards):
    return config["generators"][wildcards.generator]


def generator_select(wildcards):
    return config["generators"][wildcards.generator]["select"]


def generator_model_dir(wildcards):
    return model_dir(config["generators"][wildcards.generator]["model"])


def backend_config(alias):
    """Engine settings of model ``alias`` (teachfit.generation.engines.backend_settings)."""
    return backend_settings(config["models"][alias], config["generation"])


def base_backend(wildcards):
    return backend_config(wildcards.base)


def run_label(wildcards):
    """The SFT run a job belongs to, as metadata (never parsed back from paths)."""
    return {
        "dataset": wildcards.dataset,
        "generator": wildcards.generator,
        "selection": wildcards.selection,
        "base": wildcards.base,
    }


def generator_backend(wildcards):
    return backend_config(config["generators"][wildcards.generator]["model"])


def seedset_entry(wildcards):
    return config["seedsets"][wildcards.seedset]


def seedset_file(wildcards):
    entry = config["seedsets"][wildcards.seedset]
    if entry.get("path"):
        return entry["path"]
    return f"results/seeds/{wildcards.seedset}.parquet"


def instructions_file(wildcards):
    return f"results/instructions/{wildcards.dataset}.parquet"


def scorer_dir(wildcards):
    return model_dir(wildcards.scorer)


def base_dir(wildcards):
    return model_dir(wildcards.base)


def reward_model_dir(wildcards):
    return model_dir(PLAN.reward_model(wildcards.dataset))


def reward_settings(wildcards):
    return PLAN.reward_settings(wildcards.dataset)


def selection_settings(wildcards):
    return PLAN.selection_settings(wildcards.selection)


def scores_file(dataset, generator, scorer, convention):
    """L(Q), L(A|Q), L(A) of a generator's responses under one scorer and convention."""
    return f"results/scores/{dataset}/{generator}/{scorer}.{convention}.parquet"


def scoring_settings(wildcards):
    """The scoring job's settings: the scoring section narrowed to its convention."""
    return convention_settings(config["scoring"], wildcards.convention)


def selection_scores(wildcards):
    """Scores the selection method needs (none for random / full data)."""
    key = PLAN.selection_scorer(wildcards.selection)
    if key is None:
        return []
    return [
        scores_file(
            wildcards.dataset, wildcards.generator, key["scorer"], key["convention"]
        )
    ]


def get_final_output():
    """Every target but the per-run IFS figures of the evolved sets (evolved_run_figures)."""
    return PLAN.final_outputs(ranked=lambda seedset, scenario: ())


def evolved_run_figures(wildcards):
    """The per-run IFS figures of the ranked evolvers' sets (checkpoint merge_evolved); kept out of
    get_final_output so that a dry run still lists every other job before the checkpoint runs.
    """
    evolved = set(PLAN.evolved_datasets())
    return [
        f"results/figures/ifs/{r.path}.png"
        for r in PLAN.ifs_runs(ranked_evolvers)
        if r.dataset in evolved
    ]


def wildcard_run(wildcards):
    return plan.Run(
        wildcards.dataset, wildcards.generator, wildcards.selection, wildcards.base
    )


def selected_checkpoint_input(wildcards):
    """The IFS-selected checkpoint, when only final + selected are evaluated and the run has
    an IFS curve (ifs.runs)."""
    if config["eval"]["checkpoints"] != "final_and_selected":
        return []
    run = wildcard_run(wildcards)
    if not PLAN.has_ifs_curve(run):
        return []
    return [f"results/ifs/checkpoints/{run.path}.selected.json"]


def run_eval_settings(wildcards):
    """The eval section for one run: final_and_selected becomes final for a run without an
    IFS curve (ifs.runs), whose selected checkpoint does not exist."""
    e = dict(config["eval"])
    if e["checkpoints"] == "final_and_selected" and not PLAN.has_ifs_curve(
        wildcard_run(wildcards)
    ):
        e["checkpoints"] = "final"
    return e


def model_gpus(alias, kind="forward", job=""):
    """GPUs of a ``kind`` job on model ``alias``: a memory estimate (teachfit.workflow.resources)."""
    return job_gpus(config, alias, kind, job)


def gpus_generator(wildcards):
    return model_gpus(
        config["generators"][wildcards.generator]["model"], "vllm", "generate_responses"
    )


def gpus_evolver(wildcards):
    return model_gpus(wildcards.evolver, "vllm", "evolve_instructions")


def gpus_reward(wildcards):
    return model_gpus(PLAN.reward_model(wildcards.dataset), "forward", "score_rewards")


def gpus_scorer(wildcards):
    return model_gpus(wildcards.scorer, "forward", "score_losses")


def gpus_train(wildcards):
    return model_gpus(wildcards.base, "train", "train_sft")


def gpus_base(wildcards):
    return model_gpus(wildcards.base, "generate", "answer_ifs_run")


def gpus_base_engine(wildcards):
    return model_gpus(wildcards.base, "vllm", "answer_winrate")


def gpus_base_eval(wildcards):
    return model_gpus(wildcards.base, "eval", "evaluate_checkpoints")


def gpus_model(wildcards):
    return model_gpus(wildcards.model, "eval", "evaluate_model")


def gpus_model_engine(wildcards):
    return model_gpus(wildcards.model, "vllm", "answer_ifs_model")


def gpus_judge(wildcards):
    return max(1, model_gpus(config["evolver"]["judge"], "forward", "evolver judge"))


def gpus_winrate_judge(wildcards):
    return model_gpus(
        config["teacher"]["winrate"]["benchmarks"][wildcards.benchmark]["judge"],
        "vllm",
        "judge_winrate",
    )


def gpus_objecqa_judge(wildcards):
    return max(
        1, model_gpus(config["ifs"]["objecqa"]["judge"], "forward", "objecqa judge")
    )
