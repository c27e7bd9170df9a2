# lm-eval on base/instruct models and on every (or the final / IFS-selected)
# checkpoint of every SFT run (teachfit.evaluation.lm_eval, one function per rule).
# The JSON is kept as lm-eval writes it; the .parquet beside it has one tidy row
# per (model, checkpoint, task, metric). eval.backend picks lm-eval's hf or vllm model; vllm
# needs the vLLM stack (envs/eval_vllm.yaml: vllm pins other torch/transformers than envs/eval.yaml).

EVAL_ENV = (
    "../envs/eval_vllm.yaml"
    if config["eval"]["backend"] == "vllm"
    else "../envs/eval.yaml"
)


rule evaluate_model:
    input:
        model_dir=lambda wildcards: model_dir(wildcards.model),
    output:
        results="results/eval/models/{model}.json",
        samples="results/eval/models/{model}.samples.jsonl",
        tidy="results/eval/models/{model}.parquet",
    log:
        log="results/logs/evaluate_model/{model}.log",
    benchmark:
        "results/benchmarks/evaluate_model/{model}.tsv"
    conda:
        EVAL_ENV
    threads: 2
    resources:
        gpu=gpus_model,
    params:
        eval=config["eval"],
        model="{model}",
        backend=lambda wildcards: backend_config(wildcards.model),
    script:
        "../scripts/evaluate_model.py"


rule evaluate_checkpoints:
    input:
        sft_dir="results/sft/{dataset}/{generator}/{selection}/{base}",
        model_dir=base_dir,
        selected=selected_checkpoint_input,
    output:
        eval_dir=directory("results/eval/{dataset}/{generator}/{selection}/{base}"),
        tidy="results/eval/{dataset}/{generator}/{selection}/{base}.parquet",
    log:
        log="results/logs/evaluate_checkpoints/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/evaluate_checkpoints/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        EVAL_ENV
    threads: 2
    resources:
        gpu=gpus_base_eval,
    params:
        eval=run_eval_settings,
        run=run_label,
        backend=base_backend,
    script:
        "../scripts/evaluate_checkpoints.py"


rule summarize_evals:
    input:
        runs=lambda wildcards: [
            f"results/eval/{r.path}.parquet" for r in trained_runs()
        ],
        models=lambda wildcards: [
            f"results/eval/models/{m}.parquet" for m in PLAN.names["eval_models"]
        ],
    output:
        table=report(
            "results/tables/eval_summary.csv",
            caption="report/eval_summary.rst",
            category="Evaluation",
        ),
    log:
        log="results/logs/summarize_evals/summary.log",
    benchmark:
        "results/benchmarks/summarize_evals/summary.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    script:
        "../scripts/summarize_evals.py"
