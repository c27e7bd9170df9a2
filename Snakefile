# Teachfit: which teacher, which evolver, when to stop.
#
# Path grammar (every output): results/<stage>/<wildcard dirs>/<artifact>.<ext>
#   results/models/{model}/                                   materialized model (safetensors + manifest)
#   results/instructions/{dataset}.parquet                    seed set or evolved set ({seedset}-{scenario}-{evolver})
#   results/evolved/{seedset}/{evolver}/{scenario}/round{k}.parquet
#   results/generations/{dataset}/{generator}.parquet         all n samples per instruction
#   results/rewards/{dataset}/{generator}.parquet             reward per sample
#   results/responses/{dataset}/{generator}.parquet           the kept response per instruction
#   results/scores/{dataset}/{generator}/{scorer}.{convention}.parquet  L(Q), L(A|Q), L(A): scorer + convention
#   results/trainsets/{dataset}/{generator}/{selection}.parquet
#   results/sft/{dataset}/{generator}/{selection}/{base}/     adapter + checkpoints
#   results/eval/{dataset}/{generator}/{selection}/{base}/    lm-eval JSON per checkpoint (+ .parquet tidy table)
#   results/eval/models/{model}/                              lm-eval JSON of a base/instruct model
#   results/generations/{dataset}/{generator}.join.json      a dataset generator's join counts
#   results/select_data/{name}/                               a user data set: pairs, scores, selected.jsonl
#   results/ifs/..., results/tables/..., results/figures/...
#   logs and benchmarks mirror outputs under results/logs/<rule>/ and results/benchmarks/<rule>/

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/study_inputs.smk"
include: "rules/recommend_inputs.smk"
include: "rules/per_instruction_inputs.smk"
include: "rules/models.smk"
include: "rules/seeds.smk"
include: "rules/responses.smk"
include: "rules/metrics.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
include: "rules/analysis.smk"
include: "rules/teacher.smk"
include: "rules/recommend.smk"
include: "rules/per_instruction.smk"
include: "rules/evolve.smk"
include: "rules/ifs.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
        evolved_run_figures,
