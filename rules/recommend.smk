# Recommend a teacher and select data without fine-tuning (issue 14; functions in
# teachfit.recommend and teachfit.generation.dataset):
# - generator kind `dataset`: an existing data set's responses, joined to the study's
#   instructions (import_responses), then the same rewards / scores / metrics as a model's;
# - rank_teachers: candidates ranked by CAR and the other data metrics, per student (no SFT or
#   evaluation in its DAG unless teacher.ranking.measured asks for the predicted-vs-measured check);
# - select_data: a user data set -> its top-k% as a ready-to-train chat-messages JSONL.
from teachfit.generation.dataset import source_label

SELECT_DATA_FIELDS = (
    "format",
    "instruction_field",
    "input_field",
    "response_field",
    "messages_field",
)


def dataset_generator_entry(wildcards):
    return config["generators"][wildcards.generator]["dataset"]


def dataset_generator_source(wildcards):
    entry = dataset_generator_entry(wildcards)
    if entry.get("path"):
        return entry["path"]
    return f"results/raw/generators/{wildcards.generator}.parquet"


def ranking_generators(wildcards):
    return list(config["teacher"]["generators"])


def ranking_sources(wildcards):
    """Where each candidate's responses come from: ``model <alias>`` or ``dataset <file>``."""
    out = {}
    for g in config["teacher"]["generators"]:
        entry = config["generators"][g]
        if entry["kind"] == "dataset":
            out[g] = f"dataset {source_label(entry['dataset'])}"
        else:
            out[g] = f"model {entry['model']}"
    return out


def ranking_join_generators(wildcards):
    return [
        g
        for g in config["teacher"]["generators"]
        if config["generators"][g]["kind"] == "dataset"
    ]


def ranking_join_reports(wildcards):
    t = config["teacher"]
    return [
        f"results/generations/{t['instructions']}/{g}.join.json"
        for g in ranking_join_generators(wildcards)
    ]


def ranking_measured(wildcards):
    """The full study's performance table, only when teacher.ranking.measured is on."""
    if PLAN.ranking_measured():
        return ["results/tables/teacher_performance.csv"]
    return []


def select_data_entry(wildcards):
    return config["select_data"][wildcards.name]


def select_data_fields(wildcards):
    """The reading settings of a select_data entry (not the metric: changing it re-runs
    select_data only)."""
    entry = select_data_entry(wildcards)
    return {k: entry[k] for k in SELECT_DATA_FIELDS}


def select_data_source(wildcards):
    entry = select_data_entry(wildcards)
    if entry.get("path"):
        return entry["path"]
    return f"results/raw/select_data/{wildcards.name}.parquet"


def select_data_student(wildcards):
    return select_data_entry(wildcards)["student"]


def select_data_student_dir(wildcards):
    return model_dir(select_data_student(wildcards))


def select_data_settings(wildcards):
    entry = select_data_entry(wildcards)
    return {"metric": entry["metric"], "top_percent": float(entry["top_percent"])}


def gpus_select_data(wildcards):
    return model_gpus(select_data_student(wildcards))


rule download_generator_dataset:
    output:
        raw="results/raw/generators/{generator}.parquet",
    log:
        log="results/logs/download_generator_dataset/{generator}.log",
    benchmark:
        "results/benchmarks/download_generator_dataset/{generator}.tsv"
    wildcard_constraints:
        generator=PLAN.alternation("dataset_generators"),
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        entry=dataset_generator_entry,
    script:
        "../scripts/download_seedset.py"


rule import_responses:
    input:
        instructions=instructions_file,
        source=dataset_generator_source,
    output:
        generations="results/generations/{dataset}/{generator}.parquet",
        join_report="results/generations/{dataset}/{generator}.join.json",
    log:
        log="results/logs/import_responses/{dataset}/{generator}.log",
    benchmark:
        "results/benchmarks/import_responses/{dataset}/{generator}.tsv"
    wildcard_constraints:
        generator=PLAN.alternation("dataset_generators"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        name="{generator}",
        dataset=dataset_generator_entry,
    script:
        "../scripts/import_responses.py"


rule rank_teachers:
    input:
        data_metrics="results/tables/teacher_data_metrics.csv",
        join_reports=ranking_join_reports,
        measured=ranking_measured,
    output:
        table=report(
            "results/tables/teacher_ranking.csv",
            caption="report/teacher_ranking_table.rst",
            category="Recommendation",
        ),
        figure=report(
            "results/figures/teacher/ranking.png",
            caption="report/teacher_ranking.rst",
            category="Recommendation",
        ),
        verdict="results/recommend/teacher_verdict.rst",
    log:
        log="results/logs/rank_teachers/teacher.log",
    benchmark:
        "results/benchmarks/rank_teachers/teacher.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        generators=ranking_generators,
        sources=ranking_sources,
        join_generators=ranking_join_generators,
        style=config["analysis"]["figures"],
    script:
        "../scripts/rank_teachers.py"


rule download_select_data:
    output:
        raw="results/raw/select_data/{name}.parquet",
    log:
        log="results/logs/download_select_data/{name}.log",
    benchmark:
        "results/benchmarks/download_select_data/{name}.tsv"
    wildcard_constraints:
        name=PLAN.alternation("select_data"),
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        entry=select_data_entry,
    script:
        "../scripts/download_seedset.py"


rule prepare_select_data:
    input:
        source=select_data_source,
    output:
        pairs="results/select_data/{name}/pairs.parquet",
        rejected="results/select_data/{name}/rejected.parquet",
    log:
        log="results/logs/prepare_select_data/{name}.log",
    benchmark:
        "results/benchmarks/prepare_select_data/{name}.tsv"
    wildcard_constraints:
        name=PLAN.alternation("select_data"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        name="{name}",
        entry=select_data_fields,
    script:
        "../scripts/prepare_select_data.py"


# the same function and script as rule score_losses, on the user's pairs under the student
rule score_select_data:
    input:
        responses="results/select_data/{name}/pairs.parquet",
        model_dir=select_data_student_dir,
    output:
        scores="results/select_data/{name}/scores.parquet",
    log:
        log="results/logs/score_select_data/{name}.log",
    benchmark:
        "results/benchmarks/score_select_data/{name}.tsv"
    wildcard_constraints:
        name=PLAN.alternation("select_data"),
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_select_data,
    params:
        scoring=config["scoring"],
        scorer=select_data_student,
    script:
        "../scripts/score_losses.py"


rule select_data:
    input:
        pairs="results/select_data/{name}/pairs.parquet",
        rejected="results/select_data/{name}/rejected.parquet",
        scores="results/select_data/{name}/scores.parquet",
    output:
        selected="results/select_data/{name}/selected.jsonl",
        decisions="results/select_data/{name}/decisions.csv",
        summary=report(
            "results/tables/select_data_{name}.csv",
            caption="report/select_data.rst",
            category="Recommendation",
        ),
    log:
        log="results/logs/select_data/{name}.log",
    benchmark:
        "results/benchmarks/select_data/{name}.tsv"
    wildcard_constraints:
        name=PLAN.alternation("select_data"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        name="{name}",
        selection=select_data_settings,
    script:
        "../scripts/select_data.py"
