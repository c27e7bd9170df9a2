# Evolver study (Hui et al. 2024): small vs large evolvers, Evol-Instruct rounds,
# Auto Evol-Instruct, AutoIF; instruction statistics; output space; selection.
# Round k+1 depends only on round k; each evolver's final set is equalized in
# size across evolvers before the teacher answers it.


rule evolve_instructions:
    input:
        previous=previous_round,
        model_dir=evolver_dir,
    output:
        evolved="results/evolved/{seedset}/{evolver}/{scenario}/round{k}.parquet",
        drops="results/evolved/{seedset}/{evolver}/{scenario}/round{k}.drops.json",
        top1="results/evolved/{seedset}/{evolver}/{scenario}/round{k}.top1.parquet",
    log:
        log="results/logs/evolve_instructions/{seedset}/{evolver}/{scenario}/round{k}.log",
    benchmark:
        "results/benchmarks/evolve_instructions/{seedset}/{evolver}/{scenario}/round{k}.tsv"
    wildcard_constraints:
        scenario="evol_instruct|auto_evol",
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_evolver,
    params:
        scenario="{scenario}",
        evolver="{evolver}",
        round=evolution_round,
        settings=evolution_settings,
        max_new_tokens=config["evolver"]["max_new_tokens"],
        prompt_format=evolver_prompt_format,
        backend=evolver_backend,
        seed=config["seed"],
    script:
        "../scripts/evolve_instructions.py"


rule evolve_autoif:
    input:
        seeds="results/instructions/{seedset}.parquet",
        seed_instructions=autoif_seed_instructions,
        model_dir=evolver_dir,
    output:
        evolved="results/evolved/{seedset}/{evolver}/autoif/round1.parquet",
        drops="results/evolved/{seedset}/{evolver}/autoif/round1.drops.json",
        verifiers="results/evolved/{seedset}/{evolver}/autoif/verifiers.parquet",
    log:
        log="results/logs/evolve_autoif/{seedset}/{evolver}.log",
    benchmark:
        "results/benchmarks/evolve_autoif/{seedset}/{evolver}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_evolver,
    params:
        evolver="{evolver}",
        settings=autoif_settings,
        max_new_tokens=config["evolver"]["max_new_tokens"],
        prompt_format=evolver_prompt_format,
        backend=evolver_backend,
        seed=config["seed"],
    script:
        "../scripts/evolve_autoif.py"


rule merge_evolved:
    input:
        rounds=evolved_rounds,
        round_drops=evolved_round_drops,
    output:
        merged="results/evolved/{seedset}/{scenario}.merged.parquet",
        drops="results/evolved/{seedset}/{scenario}.drops.parquet",
    log:
        log="results/logs/merge_evolved/{seedset}/{scenario}.log",
    benchmark:
        "results/benchmarks/merge_evolved/{seedset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        round_info=merged_round_info,
        evolvers=scenario_evolvers,
        equalize=config["evolver"]["equalize"],
        use_rounds=config["evolver"]["use_rounds"],
        seed=config["seed"],
    script:
        "../scripts/merge_evolved.py"


rule split_evolved:
    input:
        merged="results/evolved/{seedset}/{scenario}.merged.parquet",
    output:
        instructions="results/instructions/{seedset}-{scenario}-{evolver}.parquet",
    log:
        log="results/logs/split_evolved/{seedset}/{scenario}/{evolver}.log",
    benchmark:
        "results/benchmarks/split_evolved/{seedset}/{scenario}/{evolver}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        evolver="{evolver}",
    script:
        "../scripts/split_evolved.py"


rule describe_instructions:
    input:
        instructions="results/instructions/{dataset}.parquet",
        responses=evolver_teacher_responses,
        judge_dir=evolver_judge_dir,
        embed_dir=evolver_embed_dir,
    output:
        stats="results/stats/{dataset}.parquet",
    log:
        log="results/logs/describe_instructions/{dataset}.log",
    benchmark:
        "results/benchmarks/describe_instructions/{dataset}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_judge,
    params:
        batch_size=config["generation"]["batch_size"],
    script:
        "../scripts/describe_instructions.py"


rule build_evolver_tables:
    input:
        stats=evolved_stats,
        drops=evolved_drop_tables,
        comparison_evals=evolver_comparison_evals,
        selection_evals=evolver_selection_evals,
        selection_trainsets=evolver_selection_trainsets,
        top1=top1_files,
    output:
        comparison_table=report(
            "results/tables/evolver_comparison.csv",
            caption="report/evolver_comparison.rst",
            category="Evolver study",
        ),
        stats_table=report(
            "results/tables/evolved_instruction_stats.csv",
            caption="report/evolver_stats.rst",
            category="Evolver study",
        ),
        selection_table="results/tables/selection_comparison.csv",
        top1_table="results/tables/evolver_top1_stats.csv",
    log:
        log="results/logs/build_evolver_tables/evolver.log",
    benchmark:
        "results/benchmarks/build_evolver_tables/evolver.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        comparison_runs=evolver_comparison_runs,
        selection_runs=evolver_selection_runs,
        top1_rounds=top1_round_info,
        performance=config["performance"],
    script:
        "../scripts/build_evolver_tables.py"


rule plot_evolver_figures:
    input:
        top1=top1_files,
        stats_table="results/tables/evolved_instruction_stats.csv",
        selection_table="results/tables/selection_comparison.csv",
    output:
        top1_figure=report(
            "results/figures/evolver/top1_probability.png",
            caption="report/evolver_top1.rst",
            category="Evolver study",
        ),
        difficulty_figure=report(
            "results/figures/evolver/difficulty_per_round.png",
            caption="report/evolver_difficulty.rst",
            category="Evolver study",
        ),
        selection_figure=report(
            "results/figures/evolver/selection_comparison.png",
            caption="report/evolver_selection.rst",
            category="Evolver study",
        ),
    log:
        log="results/logs/plot_evolver_figures/evolver.log",
    benchmark:
        "results/benchmarks/plot_evolver_figures/evolver.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        top1_rounds=top1_round_info,
        style=config["analysis"]["figures"],
    script:
        "../scripts/plot_evolver_figures.py"
