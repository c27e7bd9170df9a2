# Evolver study (Hui et al. 2024): small vs large evolvers, Evol-Instruct rounds,
# Auto Evol-Instruct, AutoIF; instruction statistics; output space; selection.
# Per round: evolve (sampled, plus a 5-token greedy output-space pass), then the validity
# gate; round k+1 evolves round k's valid instructions. Per evolver: pool the valid
# instructions, the teacher answers them, the response checks; per scenario: rank the
# evolvers (evolver.min_valid) and equalize the ranked sets; only those train.


rule evolve_instructions:
    input:
        previous=previous_round,
        model_dir=evolver_dir,
    output:
        replies=paths.evolved_round(
            "{seedset}", "{evolver}", "{scenario}", "{k}", ".replies.parquet"
        ),
        top1=paths.evolved_round(
            "{seedset}", "{evolver}", "{scenario}", "{k}", ".top1.parquet"
        ),
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


# The validity gate on every reply (teachfit.studies.evolver.gate); the next round evolves
# the valid instructions only.
rule gate_instructions:
    input:
        replies=paths.evolved_round(
            "{seedset}", "{evolver}", "{scenario}", "{k}", ".replies.parquet"
        ),
        judge_dir=evolver_judge_dir,
    output:
        evolved=paths.evolved_round(
            "{seedset}", "{evolver}", "{scenario}", "{k}", ".parquet"
        ),
        verdicts=paths.evolved_round(
            "{seedset}", "{evolver}", "{scenario}", "{k}", ".gate.parquet"
        ),
        drops=paths.evolved_round(
            "{seedset}", "{evolver}", "{scenario}", "{k}", ".drops.json"
        ),
    log:
        log="results/logs/gate_instructions/{seedset}/{evolver}/{scenario}/round{k}.log",
    benchmark:
        "results/benchmarks/gate_instructions/{seedset}/{evolver}/{scenario}/round{k}.tsv"
    wildcard_constraints:
        scenario="evol_instruct|auto_evol",
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_judge,
    params:
        scenario="{scenario}",
        evolver="{evolver}",
        round=evolution_round,
        gate=config["evolver"]["gate"],
        backend=evolver_judge_backend,
    script:
        "../scripts/gate_instructions.py"


rule evolve_autoif:
    input:
        seeds=paths.instructions("{seedset}"),
        seed_instructions=autoif_seed_instructions,
        model_dir=evolver_dir,
    output:
        evolved=paths.evolved_round("{seedset}", "{evolver}", "autoif", 1, ".parquet"),
        drops=paths.evolved_round("{seedset}", "{evolver}", "autoif", 1, ".drops.json"),
        verifiers=paths.evolver_file(
            "{seedset}", "{evolver}", "autoif", "verifiers.parquet"
        ),
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


# One evolver's valid instructions of all (or the last) rounds; the teacher answers them
# (generate_responses, score_rewards, select_responses on data set <seedset>-<scenario>-<evolver>-pool)
# only when there are at least evolver.min_valid of them.
checkpoint pool_evolved:
    input:
        rounds=evolver_round_files,
    output:
        instructions=paths.instructions(
            plan.pool_name("{seedset}", "{scenario}", "{evolver}")
        ),
        summary=paths.evolver_file("{seedset}", "{evolver}", "{scenario}", "pool.json"),
    log:
        log="results/logs/pool_evolved/{seedset}/{scenario}/{evolver}.log",
    benchmark:
        "results/benchmarks/pool_evolved/{seedset}/{scenario}/{evolver}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        round_info=evolver_round_info,
        evolver="{evolver}",
        scenario="{scenario}",
        use_rounds=config["evolver"]["use_rounds"],
    script:
        "../scripts/pool_evolved.py"


# WizardLM's response rules on the teacher's answers, before the equal-size sets.
rule gate_responses:
    input:
        instructions=paths.instructions(
            plan.pool_name("{seedset}", "{scenario}", "{evolver}")
        ),
        responses=pool_responses,
    output:
        answered=paths.evolver_file(
            "{seedset}", "{evolver}", "{scenario}", "answered.parquet"
        ),
        drops=paths.evolver_file(
            "{seedset}", "{evolver}", "{scenario}", "answered.drops.json"
        ),
    log:
        log="results/logs/gate_responses/{seedset}/{scenario}/{evolver}.log",
    benchmark:
        "results/benchmarks/gate_responses/{seedset}/{scenario}/{evolver}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        evolver="{evolver}",
        scenario="{scenario}",
        gate=config["evolver"]["gate"],
    script:
        "../scripts/gate_responses.py"


# Ranks the evolvers (evolver.min_valid) and equalizes the ranked sets; what trains downstream
# depends on its ranking file.
checkpoint merge_evolved:
    input:
        answered=answered_sets,
        answered_drops=answered_drops,
        pools=pool_summaries,
        round_drops=evolved_round_drops,
    output:
        merged=paths.scenario_file("{seedset}", "{scenario}", ".merged.parquet"),
        drops=paths.scenario_file("{seedset}", "{scenario}", ".drops.parquet"),
        ranking=paths.scenario_file("{seedset}", "{scenario}", ".ranking.json"),
    log:
        log="results/logs/merge_evolved/{seedset}/{scenario}.log",
    benchmark:
        "results/benchmarks/merge_evolved/{seedset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        answered_evolvers=answered_evolvers,
        evolvers=scenario_evolvers,
        round_info=merged_round_info,
        equalize=config["evolver"]["equalize"],
        min_valid=config["evolver"]["min_valid"],
        seed=config["seed"],
    script:
        "../scripts/merge_evolved.py"


rule split_evolved:
    input:
        merged=paths.scenario_file("{seedset}", "{scenario}", ".merged.parquet"),
        pool=paths.instructions(plan.pool_name("{seedset}", "{scenario}", "{evolver}")),
    output:
        instructions=paths.instructions(
            plan.evolved_name("{seedset}", "{scenario}", "{evolver}")
        ),
        responses=paths.responses(
            plan.evolved_name("{seedset}", "{scenario}", "{evolver}"), EVOLVER_TEACHER
        ),
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
        instructions=paths.instructions("{dataset}"),
        responses=evolver_teacher_responses,
        judge_dir=evolver_judge_dir,
        embed_dir=evolver_embed_dir,
    output:
        stats=paths.stats("{dataset}"),
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
        rankings=evolved_rankings,
        comparison_evals=evolver_comparison_evals,
        selection_evals=evolver_selection_evals,
        selection_trainsets=evolver_selection_trainsets,
        top1=top1_files,
    output:
        comparison_table=report(
            paths.table("evolver_comparison"),
            caption="report/evolver_comparison.rst",
            category="Evolver study",
        ),
        stats_table=report(
            paths.table("evolved_instruction_stats"),
            caption="report/evolver_stats.rst",
            category="Evolver study",
        ),
        selection_table=paths.table("selection_comparison"),
        top1_table=paths.table("evolver_top1_stats"),
    log:
        log="results/logs/build_evolver_tables/evolver.log",
    benchmark:
        "results/benchmarks/build_evolver_tables/evolver.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        drop_sets=evolved_drop_sets,
        comparison_runs=evolver_comparison_runs,
        selection_runs=evolver_selection_runs,
        top1_rounds=top1_round_info,
        performance=config["performance"],
    script:
        "../scripts/build_evolver_tables.py"


rule plot_evolver_figures:
    input:
        top1=top1_files,
        stats_table=paths.table("evolved_instruction_stats"),
        selection_table=paths.table("selection_comparison"),
    output:
        top1_figure=report(
            paths.figure("evolver/top1_probability"),
            caption="report/evolver_top1.rst",
            category="Evolver study",
        ),
        difficulty_figure=report(
            paths.figure("evolver/difficulty_per_round"),
            caption="report/evolver_difficulty.rst",
            category="Evolver study",
        ),
        selection_figure=report(
            paths.figure("evolver/selection_comparison"),
            caption="report/evolver_selection.rst",
            category="Evolver study",
        ),
        gate_figure=report(
            paths.figure("evolver/gate_counts"),
            caption="report/evolver_gate.rst",
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
