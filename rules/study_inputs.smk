# Input and params functions of the study rules (teacher, evolve, ifs).

# --- teacher study
# Metadata travels as params aligned with the inputs: teacher_generators with
# teacher_responses, teacher_score_keys with teacher_scores, teacher_winrate_runs with
# teacher_winrates (each pair built from one list, so they cannot drift apart). Win rates are
# per benchmark (teacher.winrate.benchmarks; wildcard {benchmark}).


def teacher_generators(wildcards):
    return list(config["teacher"]["generators"])


def teacher_bases(wildcards):
    return list(config["teacher"]["bases"])


def teacher_reference_model(wildcards):
    return config["teacher"]["reference_model"]


def teacher_responses(wildcards):
    t = config["teacher"]
    return [
        f"results/responses/{t['instructions']}/{g}.parquet"
        for g in teacher_generators(wildcards)
    ]


def teacher_score_keys(wildcards):
    """One {generator, scorer, convention} per scores file (teachfit.workflow.plan.Plan.teacher_score_keys)."""
    return PLAN.teacher_score_keys()


def teacher_scores(wildcards):
    t = config["teacher"]
    return [
        scores_file(t["instructions"], k["generator"], k["scorer"], k["convention"])
        for k in teacher_score_keys(wildcards)
    ]


def teacher_conventions(wildcards):
    """Which convention feeds which data metric: {"car": ..., "ifd": ...}."""
    t = config["teacher"]
    return {"car": t["car"]["convention"], "ifd": t["ifd_convention"]}


def teacher_evals(wildcards):
    t = config["teacher"]
    return [
        f"results/eval/{t['instructions']}/{g}/full/{b}.parquet"
        for g in t["generators"]
        for b in t["bases"]
    ]


def teacher_winrate_runs(wildcards):
    """One {base, generator, benchmark, headline} per win-rate summary (none when the win rate
    is off); headline = the summary key that counts in the performance average."""
    t = config["teacher"]
    return [
        {
            "base": b,
            "generator": g,
            "benchmark": name,
            "headline": headline_key(winrate_benchmark(name)["length_controlled"]),
        }
        for name in PLAN.winrate_benchmarks()
        for g in t["generators"]
        for b in t["bases"]
    ]


def teacher_winrates(wildcards):
    """The summary of each run of teacher_winrate_runs: the judge's, or rule alpaca_eval_lc's
    when the benchmark reports AlpacaEval's own LC."""
    t = config["teacher"]
    out = []
    for r in teacher_winrate_runs(wildcards):
        stem = f"results/winrate/{r['benchmark']}/{t['instructions']}/{r['generator']}/full/{r['base']}"
        lc = winrate_benchmark(r["benchmark"])["length_controlled"]
        out.append(
            f"{stem}.alpaca_eval.json" if lc == "alpaca_eval" else f"{stem}.json"
        )
    return out


def winrate_benchmark(name):
    return config["teacher"]["winrate"]["benchmarks"][name]


def winrate_part_file(benchmark, part):
    """The Parquet of a benchmark's instructions or reference outputs: a seed set's prepared
    instructions, a generator's responses to them, or the download of a hub file."""
    b = winrate_benchmark(benchmark)
    source = b[part]
    if "seedset" in source:
        return f"results/instructions/{source['seedset']}.parquet"
    if "generator" in source:
        return f"results/responses/{b['instructions']['seedset']}/{source['generator']}.parquet"
    return f"results/winrate_data/{benchmark}/{part}.parquet"


def winrate_instructions(wildcards):
    return winrate_part_file(wildcards.benchmark, "instructions")


def winrate_reference(wildcards):
    return winrate_part_file(wildcards.benchmark, "reference")


def winrate_hub_source(wildcards):
    return winrate_benchmark(wildcards.benchmark)[wildcards.part]["hub"]


def winrate_max_new_tokens(wildcards):
    return winrate_benchmark(wildcards.benchmark)["max_new_tokens"]


def winrate_judge_dir(wildcards):
    return model_dir(winrate_benchmark(wildcards.benchmark)["judge"])


def winrate_judge_backend(wildcards):
    return backend_config(winrate_benchmark(wildcards.benchmark)["judge"])


def winrate_judge_prompt(wildcards):
    path = winrate_benchmark(wildcards.benchmark)["judge_prompt"]
    return [path] if path else []


def winrate_judge_settings(wildcards):
    """teachfit.evaluation.winrate.WinrateJudgeSettings of the benchmark (judging only: answer
    lengths and data sources are other rules' params and inputs)."""
    b = winrate_benchmark(wildcards.benchmark)
    reference_name = b["reference_name"]
    if reference_name is None and "generator" in b["reference"]:
        reference_name = b["reference"]["generator"]
    return {
        "name": wildcards.benchmark,
        "protocol": b["protocol"],
        "judge": b["judge"],
        "reference_name": reference_name,
        "length_controlled": b["length_controlled"],
        "judge_max_new_tokens": b["judge_max_new_tokens"],
    }


def winrate_glm(wildcards):
    return winrate_benchmark(wildcards.benchmark)["alpaca_eval_glm"]


# --- evolve study
# Two checkpoints make the study's DAG depend on what the gate kept: pool_evolved (is an
# evolver's pool big enough to answer?) and merge_evolved (which evolvers are ranked).

#: the generator answering every evolved set (a name even when the study is off, for split_evolved's output)
EVOLVER_TEACHER = (
    config["evolver"]["teacher"] if config["evolver"]["activate"] else "none"
)


def autoif_seed_instructions(wildcards):
    path = config["evolver"]["scenarios"]["autoif"]["seed_instructions"]
    return path or str(package_data("autoif_seed_instructions.txt"))


def previous_round(wildcards):
    """Round 1 evolves the seed set; round k the valid instructions of round k-1 (gate_instructions)."""
    k = int(wildcards.k)
    if k == 1:
        return f"results/instructions/{wildcards.seedset}.parquet"
    return f"results/evolved/{wildcards.seedset}/{wildcards.evolver}/{wildcards.scenario}/round{k - 1}.parquet"


def evolver_dir(wildcards):
    return model_dir(wildcards.evolver)


def evolver_backend(wildcards):
    return backend_config(wildcards.evolver)


def evolver_prompt_format(wildcards):
    """Instruct evolvers get their chat template, base evolvers a plain few-shot prompt."""
    kind = config["models"][wildcards.evolver]["kind"]
    return "chat" if kind == "instruct" else "fewshot"


def evolution_round(wildcards):
    return int(wildcards.k)


def evolution_settings(wildcards):
    return PLAN.evolution_settings(wildcards.scenario)


def autoif_settings(wildcards):
    return PLAN.evolution_settings("autoif")


def round_file(r, suffix=".parquet"):
    """The round file of one ``PLAN.evolution_rounds()`` entry."""
    return f"results/evolved/{r['seedset']}/{r['evolver']}/{r['scenario']}/round{r['round']}{suffix}"


def evolver_round_info(wildcards):
    """seedset, scenario, evolver and round of each valid-instruction file of one evolver (aligned
    with evolver_round_files)."""
    return [
        r
        for r in PLAN.evolution_rounds(wildcards.seedset, wildcards.scenario)
        if r["evolver"] == wildcards.evolver
    ]


def evolver_round_files(wildcards):
    return [round_file(r) for r in evolver_round_info(wildcards)]


def pool_file(seedset, scenario, evolver):
    return f"results/instructions/{plan.pool_name(seedset, scenario, evolver)}.parquet"


def pool_responses(wildcards):
    pool = plan.pool_name(wildcards.seedset, wildcards.scenario, wildcards.evolver)
    return f"results/responses/{pool}/{EVOLVER_TEACHER}.parquet"


def answered_evolvers(wildcards):
    """The evolvers of a scenario whose pool holds at least evolver.min_valid instructions, so the
    teacher answers it (checkpoint pool_evolved)."""
    out = []
    for ev in PLAN.scenario_evolvers(wildcards.scenario):
        summary = checkpoints.pool_evolved.get(
            seedset=wildcards.seedset, scenario=wildcards.scenario, evolver=ev
        ).output.summary
        if read_json(summary)["rows"] >= config["evolver"]["min_valid"]:
            out.append(ev)
    return out


def answered_sets(wildcards):
    return [
        f"results/evolved/{wildcards.seedset}/{ev}/{wildcards.scenario}/answered.parquet"
        for ev in answered_evolvers(wildcards)
    ]


def answered_drops(wildcards):
    return [
        f"results/evolved/{wildcards.seedset}/{ev}/{wildcards.scenario}/answered.drops.json"
        for ev in answered_evolvers(wildcards)
    ]


def pool_summaries(wildcards):
    return [
        f"results/evolved/{wildcards.seedset}/{ev}/{wildcards.scenario}/pool.json"
        for ev in PLAN.scenario_evolvers(wildcards.scenario)
    ]


def merged_round_info(wildcards):
    """seedset, scenario, evolver and round of each file of evolved_round_drops (aligned)."""
    return PLAN.evolution_rounds(wildcards.seedset, wildcards.scenario)


def evolved_round_drops(wildcards):
    return [round_file(r, ".drops.json") for r in merged_round_info(wildcards)]


def scenario_evolvers(wildcards):
    return PLAN.scenario_evolvers(wildcards.scenario)


def ranked_evolvers(seedset, scenario):
    """The evolvers of a scenario with at least evolver.min_valid valid instructions
    (checkpoint merge_evolved's ranking file); only their sets train."""
    ranking = checkpoints.merge_evolved.get(
        seedset=seedset, scenario=scenario
    ).output.ranking
    return read_json(ranking)["ranked"]


def trained_runs():
    """PLAN.runs without the runs on the sets of evolvers that were not ranked."""
    return PLAN.trained_runs(ranked_evolvers)


def evolver_teacher_responses(wildcards):
    return f"results/responses/{wildcards.dataset}/{EVOLVER_TEACHER}.parquet"


def evolver_judge_dir(wildcards):
    return model_dir(config["evolver"]["judge"])


def evolver_judge_backend(wildcards):
    return backend_config(config["evolver"]["judge"])


def evolver_embed_dir(wildcards):
    return model_dir(config["evolver"]["embedding_model"])


def evolved_stats(wildcards):
    """The statistics of every ranked evolver's set."""
    return [
        f"results/stats/{plan.evolved_name(s, sc, ev)}.parquet"
        for s, sc, ev in PLAN.evolved
        if ev in ranked_evolvers(s, sc)
    ]


def evolved_drop_sets(wildcards):
    """seedset and scenario of each drop table / ranking file (aligned)."""
    return [
        {"seedset": s, "scenario": sc}
        for s in config["evolver"]["seedsets"]
        for sc in PLAN.active_scenarios()
    ]


def evolved_drop_tables(wildcards):
    return [
        f"results/evolved/{d['seedset']}/{d['scenario']}.drops.parquet"
        for d in evolved_drop_sets(wildcards)
    ]


def evolved_rankings(wildcards):
    return [
        f"results/evolved/{d['seedset']}/{d['scenario']}.ranking.json"
        for d in evolved_drop_sets(wildcards)
    ]


def eval_file(run):
    return f"results/eval/{run['dataset']}/{run['generator']}/{run['selection']}/{run['base']}.parquet"


def evolver_comparison_runs(wildcards):
    return PLAN.evolver_runs("comparison", ranked_evolvers)


def evolver_comparison_evals(wildcards):
    return [eval_file(r) for r in evolver_comparison_runs(wildcards)]


def evolver_selection_runs(wildcards):
    return PLAN.evolver_runs("selection", ranked_evolvers)


def evolver_selection_evals(wildcards):
    return [eval_file(r) for r in evolver_selection_runs(wildcards)]


def evolver_selection_trainsets(wildcards):
    """The trainset of each selection run (aligned with evolver_selection_runs): its counts
    (candidates, dropped, truncated) go into selection_comparison.csv."""
    return [
        f"results/trainsets/{r['dataset']}/{r['generator']}/{r['selection']}.parquet"
        for r in evolver_selection_runs(wildcards)
    ]


def top1_round_info(wildcards):
    """seedset, scenario, evolver and round of each file of top1_files (aligned)."""
    return PLAN.evolution_rounds(top1=True)


def top1_files(wildcards):
    return [round_file(r, ".top1.parquet") for r in top1_round_info(wildcards)]


# --- ifs study


def tone_pairs(wildcards):
    """A configured file, one generator's responses, or (default) every kept response the
    pipeline has (teacher generators and the evolver teacher on every evolved set); plus, when
    ifs.pairs.answers is set, one generator's answers to one seed set (e.g. SmolLM2 on the
    project's tone instructions), read from its generations (no reward scoring needed).
    """
    f = config["ifs"]["pairs"]
    if f["path"]:
        files = [f["path"]]
    elif f["generator"]:
        files = [
            f"results/responses/{config['teacher']['instructions']}/{f['generator']}.parquet"
        ]
    else:
        files = sorted(
            {
                f"results/responses/{r.dataset}/{r.generator}.parquet"
                for r in trained_runs()
            }
        )
    a = f["answers"]
    if a["seedset"] and a["generator"]:
        files.append(f"results/generations/{a['seedset']}/{a['generator']}.parquet")
    return files


def ifs_prompt_source(wildcards):
    """The IFS instruction file: ifs.prompts.path, else the package's own set."""
    return config["ifs"]["prompts"]["path"] or str(package_data("ifs_prompts.jsonl"))


def objecqa_questions(wildcards):
    return str(package_data("objecqa.jsonl"))


def objecqa_calibration(wildcards):
    """The ObjecQA judge's calibration, when ObjecQA runs (no file otherwise)."""
    return (
        ["results/ifs/objecqa_judge.json"]
        if config["ifs"]["objecqa"]["activate"]
        else []
    )


def objecqa_judge_set(wildcards):
    """The project's labelled answers (calibration and held-out splits) for the ObjecQA judge."""
    return str(package_data("objecqa_judge_set.jsonl"))


def ifs_model_backend(wildcards):
    return backend_config(wildcards.model)


def ifs_judge_backend(wildcards):
    return backend_config(config["ifs"]["objecqa"]["judge"])


def ifs_tables_input(wildcards):
    runs = PLAN.ifs_runs(
        ranked_evolvers
    )  # the ranked evolvers' runs (checkpoint merge_evolved)
    return {
        "model_scores": [
            f"results/ifs/scores/models/{m}.parquet" for m in PLAN.names["ifs_models"]
        ],
        "curves": [f"results/ifs/checkpoints/{r.path}.parquet" for r in runs],
        "run_scores": [f"results/ifs/scores/runs/{r.path}.parquet" for r in runs],
        "evals": [f"results/eval/{r.path}.parquet" for r in runs],
        "eval_dirs": [f"results/eval/{r.path}" for r in runs],
    }
