# Config loading and validation, wildcard constraints, the checkpoint readers, and the input
# functions every stage shares. An input function is one line: a function of
# teachfit.workflow.inputs bound to this config and plan (input_function); paths come from
# teachfit.workflow.paths. Study input functions: rules/study_inputs.smk, rules/recommend_inputs.smk.
# The teachfit package is installed in every environment that runs this workflow (the local
# venv: `make setup`; conda envs: `-e ${TEACHFIT_WORKFLOW}` in envs/*.yaml); nothing here edits
# sys.path. Snakemake builds a conda env from a copy of its yaml in .snakemake/conda/, so pip finds
# this folder through TEACHFIT_WORKFLOW (docs/environments.md), not a relative path.
from teachfit.schema import check_duplicate_keys
from teachfit.workflow.config import export_workflow_dir, validate_config
from teachfit.workflow import inputs, paths, plan
from teachfit.io import read_json
from teachfit.workflow.resources import job_gpus

export_workflow_dir(workflow.basedir)
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


def ranked_evolvers(seedset, scenario):
    """The evolvers of a scenario with at least evolver.min_valid valid instructions
    (checkpoint merge_evolved's ranking file); only their sets train."""
    ranking = checkpoints.merge_evolved.get(
        seedset=seedset, scenario=scenario
    ).output.ranking
    return read_json(ranking)["ranked"]


def pool_rows(seedset, scenario, evolver):
    """The number of valid instructions in an evolver's pool (checkpoint pool_evolved)."""
    summary = checkpoints.pool_evolved.get(
        seedset=seedset, scenario=scenario, evolver=evolver
    ).output.summary
    return read_json(summary)["rows"]


def input_function(fn, **checkpoint_readers):
    """``fn`` of teachfit.workflow.inputs as a function of the wildcards alone."""
    return inputs.bind(fn, config, PLAN, **checkpoint_readers)


def get_final_output():
    """Every target but the per-run IFS figures of the evolved sets (evolved_run_figures)."""
    return inputs.final_outputs(PLAN)


evolved_run_figures = input_function(inputs.evolved_run_figures, ranked=ranked_evolvers)
model_entry = input_function(inputs.model_entry)
model_dir = input_function(inputs.model_dir)
model_backend = input_function(inputs.model_backend)
generator_entry = input_function(inputs.generator_entry)
generator_select = input_function(inputs.generator_select)
generator_model_dir = input_function(inputs.generator_model_dir)
generator_backend = input_function(inputs.generator_backend)
base_dir = input_function(inputs.base_dir)
base_backend = input_function(inputs.base_backend)
run_label = input_function(inputs.run_label)
seedset_entry = input_function(inputs.seedset_entry)
seedset_file = input_function(inputs.seedset_file)
instructions_file = input_function(inputs.instructions_file)
scorer_dir = input_function(inputs.scorer_dir)
reward_model_dir = input_function(inputs.reward_model_dir)
reward_settings = input_function(inputs.reward_settings)
selection_settings = input_function(inputs.selection_settings)
scoring_settings = input_function(inputs.scoring_settings)
selection_scores = input_function(inputs.selection_scores)
selected_checkpoint_input = input_function(inputs.selected_checkpoint_input)
run_eval_settings = input_function(inputs.run_eval_settings)
summary_run_evals = input_function(inputs.summary_run_evals, ranked=ranked_evolvers)
summary_model_evals = input_function(inputs.summary_model_evals)


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
