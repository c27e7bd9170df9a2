# IFS study (AlShikh et al. 2023): response-tone classifier, IFS / IFS_partial /
# IFS_full of models (prompt formats none / suffix / alpaca) and of every SFT
# checkpoint, ObjecQA (judge calibrated against content-free inputs), the IFS-plateau
# early-stopping rule, and the selected-vs-final comparison.


rule make_tone_data:
    input:
        pairs=tone_pairs,
    output:
        data=paths.ifs_file("tone_data.parquet"),
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
        data=paths.ifs_file("tone_data.parquet"),
        encoder_dir=tone_encoder_dir,
    output:
        classifier=directory(paths.ifs_file("classifier")),
        metrics=report(
            paths.table("tone_classifier"),
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
        prompts=paths.ifs_file("prompts.parquet"),
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
        prompts=paths.ifs_file("prompts.parquet"),
        questions=objecqa_questions,
        model_dir=model_dir,
    output:
        answers=paths.ifs_answers(paths.ifs_model_target("{model}")),
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
        backend=model_backend,
        seed=config["seed"],
    script:
        "../scripts/answer_ifs_model.py"


rule answer_ifs_run:
    input:
        prompts=paths.ifs_file("prompts.parquet"),
        questions=objecqa_questions,
        model_dir=base_dir,
        sft_dir=paths.sft(paths.RUN),
    output:
        answers=paths.ifs_answers(paths.ifs_run_target(paths.RUN)),
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
        judge_dir=objecqa_judge_dir,
    output:
        calibration=paths.ifs_file("objecqa_judge.json"),
        table=report(
            paths.table("objecqa_judge"),
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
        answers=paths.ifs_answers("{target}"),
        classifier=paths.ifs_file("classifier"),
        judge_dir=objecqa_judge_dir,
        calibration=objecqa_calibration,
    output:
        scores=paths.ifs_scores("{target}"),
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
        scores=paths.ifs_scores(paths.ifs_run_target(paths.RUN)),
        train_log=paths.train_log(paths.RUN),
    output:
        selected=paths.ifs_checkpoint(paths.RUN, ".selected.json"),
        curve=paths.ifs_checkpoint(paths.RUN, ".parquet"),
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
            paths.table("ifs_models"),
            caption="report/ifs_models.rst",
            category="IFS study",
        ),
        checkpoints=report(
            paths.table("ifs_checkpoints"),
            caption="report/ifs_checkpoints.rst",
            category="IFS study",
        ),
        early_stopping=report(
            paths.table("early_stopping"),
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
        curve=paths.ifs_checkpoint(paths.RUN, ".parquet"),
    output:
        figure=report(
            paths.ifs_figure(paths.RUN),
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
