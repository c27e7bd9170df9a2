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
        model_dir=model_dir,
    output:
        results=paths.model_eval("{model}", ".json"),
        samples=paths.model_eval("{model}", ".samples.jsonl"),
        tidy=paths.model_eval("{model}", ".parquet"),
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
        backend=model_backend,
    script:
        "../scripts/evaluate_model.py"


rule evaluate_checkpoints:
    input:
        sft_dir=paths.sft(paths.RUN),
        model_dir=base_dir,
        selected=selected_checkpoint_input,
    output:
        eval_dir=directory(paths.run_eval_dir(paths.RUN)),
        tidy=paths.run_eval(paths.RUN),
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
        runs=summary_run_evals,
        models=summary_model_evals,
    output:
        table=report(
            paths.table("eval_summary"),
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
