# Teacher study (Xu et al. 2024): data metrics per (generator, base), CAR,
# benchmark performance, win rates, rank correlations and figures (one function per
# rule in teachfit.studies.teacher / teachfit.evaluation.winrate). Which generator,
# scorer or base a file belongs to travels as params aligned with the inputs
# (rules/study_inputs.smk). Changing car.beta or car.reward_offset re-runs
# compute_car and everything after it only.

TEACHER_METRICS = [
    "reward",
    "length",
    "ppl_base",
    "ppl_ref",
    "ifd_base",
    "ifd_ref",
    "car",
]


rule compute_data_metrics:
    input:
        responses=teacher_responses,
        scores=teacher_scores,
    output:
        metrics="results/metrics/teacher/data_metrics.parquet",
    log:
        log="results/logs/compute_data_metrics/teacher.log",
    benchmark:
        "results/benchmarks/compute_data_metrics/teacher.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        generators=teacher_generators,
        score_keys=teacher_score_keys,
        bases=teacher_bases,
        reference_model=teacher_reference_model,
        conventions=teacher_conventions,
    script:
        "../scripts/compute_data_metrics.py"


rule compute_car:
    input:
        metrics="results/metrics/teacher/data_metrics.parquet",
    output:
        table=report(
            "results/tables/teacher_data_metrics.csv",
            caption="report/teacher_data_metrics.rst",
            category="Teacher study",
        ),
    log:
        log="results/logs/compute_car/teacher.log",
    benchmark:
        "results/benchmarks/compute_car/teacher.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        car=config["teacher"]["car"],
    script:
        "../scripts/compute_car.py"


rule answer_winrate:
    input:
        instructions=winrate_instructions,
        model_dir=base_dir,
        sft_dir="results/sft/{dataset}/{generator}/{selection}/{base}",
    output:
        answers="results/winrate/{dataset}/{generator}/{selection}/{base}.answers.parquet",
    log:
        log="results/logs/answer_winrate/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/answer_winrate/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=gpus_base,
    params:
        max_new_tokens=config["teacher"]["winrate"]["max_new_tokens"],
        backend=base_backend,
        seed=config["seed"],
    script:
        "../scripts/answer_winrate.py"


rule judge_winrate:
    input:
        answers="results/winrate/{dataset}/{generator}/{selection}/{base}.answers.parquet",
        reference=winrate_reference,
        judge_dir=winrate_judge_dir,
    output:
        summary="results/winrate/{dataset}/{generator}/{selection}/{base}.json",
        judged="results/winrate/{dataset}/{generator}/{selection}/{base}.parquet",
    log:
        log="results/logs/judge_winrate/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/judge_winrate/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_winrate_judge,
    params:
        seed=config["seed"],
        backend=winrate_judge_backend,
    script:
        "../scripts/judge_winrate.py"


rule build_teacher_performance:
    input:
        evals=teacher_evals,
        winrates=teacher_winrates,
    output:
        table=report(
            "results/tables/teacher_performance.csv",
            caption="report/teacher_performance.rst",
            category="Teacher study",
        ),
    log:
        log="results/logs/build_teacher_performance/teacher.log",
    benchmark:
        "results/benchmarks/build_teacher_performance/teacher.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        winrate_runs=teacher_winrate_runs,
        performance=config["performance"],
        length_controlled=config["teacher"]["winrate"]["length_controlled"],
    script:
        "../scripts/build_teacher_performance.py"


rule correlate_teacher_metrics:
    input:
        data_metrics="results/tables/teacher_data_metrics.csv",
        performance="results/tables/teacher_performance.csv",
    output:
        table=report(
            "results/tables/teacher_metric_correlations.csv",
            caption="report/teacher_correlations.rst",
            category="Teacher study",
        ),
    log:
        log="results/logs/correlate_teacher_metrics/teacher.log",
    benchmark:
        "results/benchmarks/correlate_teacher_metrics/teacher.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        metrics=TEACHER_METRICS,
    script:
        "../scripts/correlate_teacher_metrics.py"


rule plot_teacher_figures:
    input:
        data_metrics="results/tables/teacher_data_metrics.csv",
        performance="results/tables/teacher_performance.csv",
        correlations="results/tables/teacher_metric_correlations.csv",
    output:
        heatmap=report(
            "results/figures/teacher/performance_heatmap.png",
            caption="report/teacher_heatmap.rst",
            category="Teacher study",
        ),
        best=report(
            "results/figures/teacher/best_generator.png",
            caption="report/teacher_best.rst",
            category="Teacher study",
        ),
        scatter=report(
            expand(
                "results/figures/teacher/scatter_{metric}.png", metric=TEACHER_METRICS
            ),
            caption="report/teacher_scatter.rst",
            category="Teacher study",
        ),
    log:
        log="results/logs/plot_teacher_figures/teacher.log",
    benchmark:
        "results/benchmarks/plot_teacher_figures/teacher.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        metrics=TEACHER_METRICS,
        style=config["analysis"]["figures"],
    script:
        "../scripts/plot_teacher_figures.py"
