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


def evolver_params_for(evolver, scenario):
    e = config["evolver"]
    entry = config["models"][evolver]
    return {
        "scenario": scenario,
        "settings": e["scenarios"][scenario],
        "max_new_tokens": e["max_new_tokens"],
        "prompt_format": "chat" if entry["kind"] == "instruct" else "fewshot",
        "backend": entry["backend"],
        "tensor_parallel_size": entry["tensor_parallel_size"],
        "batch_size": config["generation"]["batch_size"],
        "seed": config["seed"],
    }


def evolver_params(wildcards):
    return evolver_params_for(wildcards.evolver, wildcards.scenario)


def autoif_params(wildcards):
    return evolver_params_for(wildcards.evolver, "autoif")


def scenario_rounds(scenario):
    if scenario == "autoif":
        return 1
    return config["evolver"]["scenarios"][scenario]["rounds"]


def evolved_rounds(wildcards):
    n = scenario_rounds(wildcards.scenario)
    return [
        f"results/evolved/{wildcards.seedset}/{ev}/{wildcards.scenario}/round{k}.parquet"
        for ev in PLAN.scenario_evolvers(wildcards.scenario)
        for k in range(1, n + 1)
    ]


def scenario_evolvers(wildcards):
    return PLAN.scenario_evolvers(wildcards.scenario)


def evolved_drops(wildcards):
    return [p.replace(".parquet", ".drops.json") for p in evolved_rounds(wildcards)]


def evolver_tables_input(wildcards):
    e = config["evolver"]
    datasets = PLAN.evolved_datasets()
    comparison = [
        r for r in PLAN.runs if r.dataset in datasets and r.selection == "full"
    ]
    selection = [
        r for r in PLAN.runs if r.dataset in datasets and r.selection != "full"
    ]
    sel_full = [
        r
        for r in comparison
        if r.dataset.split("-")[1] == e["selection"]["scenario"]
        and r.dataset.split("-")[2] in (e["selection"]["evolvers"] or e["evolvers"])
    ]
    return {
        "stats": [f"results/stats/{d}.parquet" for d in datasets],
        "drops": [
            f"results/evolved/{s}/{sc}.drops.parquet"
            for s in e["seedsets"]
            for sc in PLAN.active_scenarios()
        ],
        "comparison": [f"results/eval/{r.path}.parquet" for r in comparison],
        "selection": [f"results/eval/{r.path}.parquet" for r in selection + sel_full],
        "rounds": [
            f"results/evolved/{s}/{ev}/{sc}/round{k}.parquet"
            for s, sc, ev in PLAN.evolved
            for k in range(1, scenario_rounds(sc) + 1)
        ],
    }


# --- ifs study


def tone_pairs(wildcards):
    """A configured file, one generator's responses, or (default) every kept response the
    pipeline has (teacher generators and the evolver teacher on every evolved set)."""
    f = config["ifs"]["pairs"]
    if f["path"]:
        return [f["path"]]
    if f["generator"]:
        return [
            f"results/responses/{config['teacher']['instructions']}/{f['generator']}.parquet"
        ]
    return sorted(
        {f"results/responses/{r.dataset}/{r.generator}.parquet" for r in PLAN.runs}
    )


def ifs_prompt_source(wildcards):
    """The IFS instruction file: ifs.prompts.path, else the package's own set."""
    return config["ifs"]["prompts"]["path"] or str(package_data("ifs_prompts.jsonl"))


def objecqa_questions(wildcards):
    return str(package_data("objecqa.jsonl"))


def ifs_model_backend(wildcards):
    return backend_config(wildcards.model)


def ifs_base_backend(wildcards):
    return backend_config(wildcards.base)


def ifs_judge_backend(wildcards):
    return backend_config(config["ifs"]["objecqa"]["judge"])


def ifs_run(wildcards):
    """The run's metadata, written as columns of its IFS curve."""
    return {
        "dataset": wildcards.dataset,
        "generator": wildcards.generator,
        "selection": wildcards.selection,
        "base": wildcards.base,
    }


def ifs_tables_input(wildcards):
    runs = PLAN.ifs_runs()
    return {
        "model_scores": [
            f"results/ifs/scores/models/{m}.parquet" for m in PLAN.names["ifs_models"]
        ],
        "curves": [f"results/ifs/checkpoints/{r.path}.parquet" for r in runs],
        "evals": [f"results/eval/{r.path}.parquet" for r in runs],
    }
