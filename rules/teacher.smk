# Teacher study (Xu et al. 2024): data metrics per (generator, base), CAR,
# benchmark performance, win rates per named benchmark (AlpacaEval 2, Arena-Hard, or the
# default run's pairwise stand-in), rank correlations and figures (one function per rule in
# teachfit.studies.teacher / teachfit.evaluation.winrate / .alpaca_eval2 / .winrate_sets). Which generator,
# scorer or base a file belongs to travels as params aligned with the inputs
# (teachfit.workflow.inputs). Changing car.beta or car.reward_offset re-runs
# compute_car and everything after it only.

TEACHER_METRICS = [
    "reward",
    "length",
    "ppl_base",
    "ppl_ref",
    "ifd_base",
    "ifd_ref",
    "car",
    "rsr_base",
]


rule compute_data_metrics:
    input:
        responses=teacher_responses,
        scores=teacher_scores,
    output:
        metrics=paths.data_metrics("teacher"),
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
        metrics=paths.data_metrics("teacher"),
    output:
        table=report(
            paths.table("teacher_data_metrics"),
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


rule download_winrate_data:
    output:
        table=paths.winrate_data("{benchmark}", "{part}"),
    log:
        log="results/logs/download_winrate_data/{benchmark}/{part}.log",
    benchmark:
        "results/benchmarks/download_winrate_data/{benchmark}/{part}.tsv"
    conda:
        "../envs/winrate.yaml"
    threads: 1
    params:
        source=winrate_hub_source,
        part="{part}",
    script:
        "../scripts/download_winrate_data.py"


rule answer_winrate:
    input:
        instructions=winrate_instructions,
        model_dir=base_dir,
        sft_dir=paths.sft(paths.RUN),
    output:
        answers=paths.winrate("{benchmark}", paths.RUN, ".answers.parquet"),
    log:
        log="results/logs/answer_winrate/{benchmark}/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/answer_winrate/{benchmark}/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_base_engine,
    params:
        max_new_tokens=winrate_max_new_tokens,
        backend=base_backend,
        seed=config["seed"],
    script:
        "../scripts/answer_winrate.py"


rule judge_winrate:
    input:
        answers=paths.winrate("{benchmark}", paths.RUN, ".answers.parquet"),
        reference=winrate_reference,
        judge_dir=winrate_judge_dir,
        judge_prompt=winrate_judge_prompt,
    output:
        summary=paths.winrate("{benchmark}", paths.RUN, ".json"),
        judged=paths.winrate("{benchmark}", paths.RUN, ".parquet"),
    log:
        log="results/logs/judge_winrate/{benchmark}/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/judge_winrate/{benchmark}/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_winrate_judge,
    params:
        seed=config["seed"],
        backend=winrate_judge_backend,
        benchmark=winrate_judge_settings,
        run=run_label,
    script:
        "../scripts/judge_winrate.py"


# AlpacaEval 2's own length-controlled win rate (alpaca-eval package): downloads df_gamed.csv
# from the hub at call time, so it runs as a local rule (the node with network), not on a GPU node.
rule alpaca_eval_lc:
    input:
        judged=paths.winrate("{benchmark}", paths.RUN, ".parquet"),
        summary=paths.winrate("{benchmark}", paths.RUN, ".json"),
    output:
        result=paths.winrate("{benchmark}", paths.RUN, ".alpaca_eval.json"),
    log:
        log="results/logs/alpaca_eval_lc/{benchmark}/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/alpaca_eval_lc/{benchmark}/{dataset}/{generator}/{selection}/{base}.tsv"
    localrule: True
    conda:
        "../envs/winrate.yaml"
    threads: 1
    params:
        glm_name=winrate_glm,
    script:
        "../scripts/alpaca_eval_lc.py"


rule build_teacher_performance:
    input:
        evals=teacher_evals,
        winrates=teacher_winrates,
    output:
        table=report(
            paths.table("teacher_performance"),
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
        mixed=PLAN.names["per_instruction_generators"],
    script:
        "../scripts/build_teacher_performance.py"


rule correlate_teacher_metrics:
    input:
        data_metrics=paths.table("teacher_data_metrics"),
        performance=paths.table("teacher_performance"),
    output:
        table=report(
            paths.table("teacher_metric_correlations"),
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
        data_metrics=paths.table("teacher_data_metrics"),
        performance=paths.table("teacher_performance"),
        correlations=paths.table("teacher_metric_correlations"),
    output:
        heatmap=report(
            paths.figure("teacher/performance_heatmap"),
            caption="report/teacher_heatmap.rst",
            category="Teacher study",
        ),
        best=report(
            paths.figure("teacher/best_generator"),
            caption="report/teacher_best.rst",
            category="Teacher study",
        ),
        scatter=report(
            expand(paths.figure("teacher/scatter_{metric}"), metric=TEACHER_METRICS),
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
