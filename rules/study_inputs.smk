# Input and params functions of the study rules (teacher, evolve, ifs).

# --- teacher study
# Metadata travels as params aligned with the inputs: teacher_generators with
# teacher_responses, teacher_score_keys with teacher_scores, teacher_winrate_runs with
# teacher_winrates (each pair built from one list, so they cannot drift apart).


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
    """One {generator, scorer} per scores file: every base and the reference model."""
    t = config["teacher"]
    scorers = dict.fromkeys([*t["bases"], t["reference_model"]])
    return [{"generator": g, "scorer": s} for g in t["generators"] for s in scorers]


def teacher_scores(wildcards):
    t = config["teacher"]
    return [
        f"results/scores/{t['instructions']}/{k['generator']}/{k['scorer']}.parquet"
        for k in teacher_score_keys(wildcards)
    ]


def teacher_evals(wildcards):
    t = config["teacher"]
    return [
        f"results/eval/{t['instructions']}/{g}/full/{b}.parquet"
        for g in t["generators"]
        for b in t["bases"]
    ]


def teacher_winrate_runs(wildcards):
    """One {base, generator} per win-rate summary (none when the win rate is off)."""
    t = config["teacher"]
    if not t["winrate"]["activate"]:
        return []
    return [{"base": b, "generator": g} for g in t["generators"] for b in t["bases"]]


def teacher_winrates(wildcards):
    t = config["teacher"]
    return [
        f"results/winrate/{t['instructions']}/{r['generator']}/full/{r['base']}.json"
        for r in teacher_winrate_runs(wildcards)
    ]


def winrate_instructions(wildcards):
    return (
        f"results/instructions/{config['teacher']['winrate']['instructions']}.parquet"
    )


def winrate_reference(wildcards):
    w = config["teacher"]["winrate"]
    return f"results/responses/{w['instructions']}/{w['reference_generator']}.parquet"


def winrate_judge_dir(wildcards):
    return model_dir(config["teacher"]["winrate"]["judge"])


def winrate_judge_backend(wildcards):
    return backend_config(config["teacher"]["winrate"]["judge"])


# --- evolve study


def autoif_seed_instructions(wildcards):
    path = config["evolver"]["scenarios"]["autoif"]["seed_instructions"]
    return path or str(package_data("autoif_seed_instructions.txt"))


def previous_round(wildcards):
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


def merged_round_info(wildcards):
    """seedset, scenario, evolver and round of each file of evolved_rounds (aligned)."""
    return PLAN.evolution_rounds(wildcards.seedset, wildcards.scenario)


def evolved_rounds(wildcards):
    return [round_file(r) for r in merged_round_info(wildcards)]


def evolved_round_drops(wildcards):
    return [round_file(r, ".drops.json") for r in merged_round_info(wildcards)]


def scenario_evolvers(wildcards):
    return PLAN.scenario_evolvers(wildcards.scenario)


def evolver_teacher_responses(wildcards):
    return (
        f"results/responses/{wildcards.dataset}/{config['evolver']['teacher']}.parquet"
    )


def evolver_judge_dir(wildcards):
    return model_dir(config["evolver"]["judge"])


def evolver_embed_dir(wildcards):
    return model_dir(config["evolver"]["embedding_model"])


def evolved_stats(wildcards):
    return [f"results/stats/{d}.parquet" for d in PLAN.evolved_datasets()]


def evolved_drop_tables(wildcards):
    return [
        f"results/evolved/{s}/{sc}.drops.parquet"
        for s in config["evolver"]["seedsets"]
        for sc in PLAN.active_scenarios()
    ]


def eval_file(run):
    return f"results/eval/{run['dataset']}/{run['generator']}/{run['selection']}/{run['base']}.parquet"


def evolver_comparison_runs(wildcards):
    return PLAN.evolver_runs("comparison")


def evolver_comparison_evals(wildcards):
    return [eval_file(r) for r in evolver_comparison_runs(wildcards)]


def evolver_selection_runs(wildcards):
    return PLAN.evolver_runs("selection")


def evolver_selection_evals(wildcards):
    return [eval_file(r) for r in evolver_selection_runs(wildcards)]


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
    project's tone instructions), read from its generations (no reward scoring needed)."""
    f = config["ifs"]["pairs"]
    if f["path"]:
        files = [f["path"]]
    elif f["generator"]:
        files = [
            f"results/responses/{config['teacher']['instructions']}/{f['generator']}.parquet"
        ]
    else:
        files = sorted(
            {f"results/responses/{r.dataset}/{r.generator}.parquet" for r in PLAN.runs}
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
    return ["results/ifs/objecqa_judge.json"] if config["ifs"]["objecqa"]["activate"] else []


def objecqa_judge_set(wildcards):
    """The project's labelled answers (calibration and held-out splits) for the ObjecQA judge."""
    return str(package_data("objecqa_judge_set.jsonl"))


def ifs_model_backend(wildcards):
    return backend_config(wildcards.model)


def ifs_judge_backend(wildcards):
    return backend_config(config["ifs"]["objecqa"]["judge"])


def ifs_tables_input(wildcards):
    runs = PLAN.ifs_runs()
    return {
        "model_scores": [
            f"results/ifs/scores/models/{m}.parquet" for m in PLAN.names["ifs_models"]
        ],
        "curves": [f"results/ifs/checkpoints/{r.path}.parquet" for r in runs],
        "run_scores": [f"results/ifs/scores/runs/{r.path}.parquet" for r in runs],
        "evals": [f"results/eval/{r.path}.parquet" for r in runs],
        "eval_dirs": [f"results/eval/{r.path}" for r in runs],
    }
