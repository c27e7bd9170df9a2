# Teachfit: which teacher, which evolver, when to stop.
#
# Path grammar (teachfit.workflow.paths, one function per artifact; docs/dag.md):
# results/<stage>/<wildcard dirs>/<artifact>.<ext>, where {run} = {dataset}/{generator}/{selection}/{base}
#   results/models/{model}                                              materialized model (safetensors + manifest)
#   results/seeds/{seedset}.parquet                                     a hub seed set as downloaded
#   results/instructions/{dataset}.parquet                              seed set, evolver pool or evolved set
#   results/generations/{dataset}/{generator}.parquet                   all n samples per instruction
#   results/generations/{dataset}/{generator}.join.json                 a dataset generator's join counts
#   results/generations/{dataset}/{generator}.choice.json               a per_instruction generator's choice counts
#   results/rewards/{dataset}/{generator}.parquet                       reward per sample
#   results/responses/{dataset}/{generator}.parquet                     the kept response per instruction
#   results/raw/generators/{generator}.parquet                          a dataset generator's hub download
#   results/scores/{dataset}/{generator}/{scorer}.{convention}.parquet  L(Q), L(A|Q), L(A) in nats
#   results/trainsets/{dataset}/{generator}/{selection}.parquet         full data or a selected top-k%
#   results/sft/{run}                                                   adapter + checkpoints
#   results/sft/{run}.train_log.parquet                                 the trainer's log
#   results/eval/{run}                                                  lm-eval JSON per checkpoint
#   results/eval/{run}.parquet                                          tidy table of a run's evaluations
#   results/eval/models/{model}.parquet                                 + .json, .samples.jsonl
#   results/metrics/{study}/data_metrics.parquet                        data metrics of a study
#   results/winrate/{benchmark}/{run}.json                              + .answers.parquet, .parquet, .alpaca_eval.json
#   results/winrate_data/{benchmark}/{part}.parquet                     a benchmark's hub file
#   results/evolved/{seedset}/{evolver}/{scenario}/round{k}.parquet     + .replies/.top1/.gate.parquet, .drops.json
#   results/evolved/{seedset}/{evolver}/{scenario}/{name}               pool.json, answered.parquet (+ .drops.json), verifiers.parquet
#   results/evolved/{seedset}/{scenario}.merged.parquet                 + .drops.parquet, .ranking.json
#   results/stats/{dataset}.parquet                                     instruction statistics
#   results/ifs/{name}                                                  tone_data, classifier/, prompts, objecqa_judge
#   results/ifs/answers/{target}.parquet                                target = models/{model} | runs/{run}
#   results/ifs/scores/{target}.parquet                                 IFS and ObjecQA scores
#   results/ifs/checkpoints/{run}.parquet                               IFS curve (+ .selected.json)
#   results/select_data/{name}/{artifact}                               pairs, rejected, scores, selected.jsonl
#   results/raw/select_data/{name}.parquet                              a select_data entry's hub download
#   results/tables/{name}.csv
#   results/figures/{name}.png                                          name = <study>/<figure>
#   results/figures/ifs/{run}.png                                       a run's IFS curve
#   logs and benchmarks mirror outputs under results/logs/<rule>/ and results/benchmarks/<rule>/;
#   files of one rule only (results/recommend/teacher_verdict.rst, results/scratch/...) are written in it

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/study_inputs.smk"
include: "rules/recommend_inputs.smk"
include: "rules/models.smk"
include: "rules/seeds.smk"
include: "rules/responses.smk"
include: "rules/metrics.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
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
