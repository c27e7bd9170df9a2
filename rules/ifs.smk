# IFS study (AlShikh et al. 2023): response-tone classifier, IFS / IFS_partial /
# IFS_full of models (prompt formats none / suffix / alpaca) and of every SFT
# checkpoint, ObjecQA (judge calibrated against content-free inputs), the IFS-plateau
# early-stopping rule, and the selected-vs-final comparison.


rule make_tone_data:
    input:
        pairs=tone_pairs,
    output:
        data="results/ifs/tone_data.parquet",
    log:
        log="results/logs/make_tone_data/tone.log",
    benchmark:
        "results/benchmarks/make_tone_data/tone.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        settings=config["ifs"]["tone_data"],
        seed=config["seed"],
    script:
        "../scripts/make_tone_data.py"


rule train_tone_classifier:
    input:
        data="results/ifs/tone_data.parquet",
        encoder_dir=lambda wildcards: model_dir(config["ifs"]["classifier"]["encoder"]),
    output:
        classifier=directory("results/ifs/classifier"),
        metrics=report(
            "results/tables/tone_classifier.csv",
            caption="report/tone_classifier.rst",
            category="IFS study",
        ),
    log:
        log="results/logs/train_tone_classifier/tone.log",
    benchmark:
        "results/benchmarks/train_tone_classifier/tone.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        settings=config["ifs"]["classifier"],
        seed=config["seed"],
    script:
        "../scripts/train_tone_classifier.py"


rule make_ifs_prompts:
    input:
        source=ifs_prompt_source,
    output:
        prompts="results/ifs/prompts.parquet",
    log:
        log="results/logs/make_ifs_prompts/prompts.log",
    benchmark:
        "results/benchmarks/make_ifs_prompts/prompts.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        settings=config["ifs"]["prompts"],
        seed=config["seed"],
    script:
        "../scripts/make_ifs_prompts.py"


rule answer_ifs_model:
    input:
        prompts="results/ifs/prompts.parquet",
        questions=objecqa_questions,
        model_dir=lambda wildcards: model_dir(wildcards.model),
    output:
        answers="results/ifs/answers/models/{model}.parquet",
    log:
        log="results/logs/answer_ifs_model/{model}.log",
    benchmark:
        "results/benchmarks/answer_ifs_model/{model}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_model_engine,
    params:
        prompt_settings=config["ifs"]["prompts"],
        objecqa=config["ifs"]["objecqa"],
        backend=ifs_model_backend,
        seed=config["seed"],
    script:
        "../scripts/answer_ifs_model.py"


rule answer_ifs_run:
    input:
        prompts="results/ifs/prompts.parquet",
        questions=objecqa_questions,
        model_dir=base_dir,
        sft_dir="results/sft/{dataset}/{generator}/{selection}/{base}",
    output:
        answers="results/ifs/answers/runs/{dataset}/{generator}/{selection}/{base}.parquet",
    log:
        log="results/logs/answer_ifs_run/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/answer_ifs_run/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=gpus_base,
    params:
        prompt_settings=config["ifs"]["prompts"],
        objecqa=config["ifs"]["objecqa"],
        backend=base_backend,
    script:
        "../scripts/answer_ifs_run.py"


rule calibrate_objecqa_judge:
    input:
        judge_set=objecqa_judge_set,
        judge_dir=lambda wildcards: model_dir(config["ifs"]["objecqa"]["judge"]),
    output:
        calibration="results/ifs/objecqa_judge.json",
        table=report(
            "results/tables/objecqa_judge.csv",
            caption="report/objecqa_judge.rst",
            category="IFS study",
        ),
    log:
        log="results/logs/calibrate_objecqa_judge/judge.log",
    benchmark:
        "results/benchmarks/calibrate_objecqa_judge/judge.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_objecqa_judge,
    params:
        objecqa=config["ifs"]["objecqa"],
        batch_size=config["generation"]["batch_size"],
        backend=ifs_judge_backend,
    script:
        "../scripts/calibrate_objecqa_judge.py"


rule score_ifs:
    input:
        answers="results/ifs/answers/{target}.parquet",
        classifier="results/ifs/classifier",
        judge_dir=lambda wildcards: model_dir(config["ifs"]["objecqa"]["judge"]),
        calibration=objecqa_calibration,
    output:
        scores="results/ifs/scores/{target}.parquet",
    log:
        log="results/logs/score_ifs/{target}.log",
    benchmark:
        "results/benchmarks/score_ifs/{target}.tsv"
    wildcard_constraints:
        target="(models|runs)/.+",
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_objecqa_judge,
    params:
        batch_size=config["generation"]["batch_size"],
        backend=ifs_judge_backend,
    script:
        "../scripts/score_ifs.py"


rule select_checkpoint:
    input:
        scores="results/ifs/scores/runs/{dataset}/{generator}/{selection}/{base}.parquet",
        train_log="results/sft/{dataset}/{generator}/{selection}/{base}.train_log.parquet",
    output:
        selected="results/ifs/checkpoints/{dataset}/{generator}/{selection}/{base}.selected.json",
        curve="results/ifs/checkpoints/{dataset}/{generator}/{selection}/{base}.parquet",
    log:
        log="results/logs/select_checkpoint/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/select_checkpoint/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        early_stopping=config["ifs"]["early_stopping"],
        run=run_label,
    script:
        "../scripts/select_checkpoint.py"


rule build_ifs_tables:
    input:
        unpack(ifs_tables_input),
    output:
        models=report(
            "results/tables/ifs_models.csv",
            caption="report/ifs_models.rst",
            category="IFS study",
        ),
        checkpoints=report(
            "results/tables/ifs_checkpoints.csv",
            caption="report/ifs_checkpoints.rst",
            category="IFS study",
        ),
        early_stopping=report(
            "results/tables/early_stopping.csv",
            caption="report/early_stopping.rst",
            category="IFS study",
        ),
    log:
        log="results/logs/build_ifs_tables/ifs.log",
    benchmark:
        "results/benchmarks/build_ifs_tables/ifs.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        performance=config["performance"],
        seed=config["seed"],
    script:
        "../scripts/build_ifs_tables.py"


rule plot_ifs_curve:
    input:
        curve="results/ifs/checkpoints/{dataset}/{generator}/{selection}/{base}.parquet",
    output:
        figure=report(
            "results/figures/ifs/{dataset}/{generator}/{selection}/{base}.png",
            caption="report/ifs_curve.rst",
            category="IFS study",
            labels={
                "dataset": "{dataset}",
                "generator": "{generator}",
                "selection": "{selection}",
                "base": "{base}",
            },
        ),
    log:
        log="results/logs/plot_ifs_curve/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/plot_ifs_curve/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        style=config["analysis"]["figures"],
    script:
        "../scripts/plot_ifs_curve.py"
