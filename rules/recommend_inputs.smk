# Input and params functions of the recommendation rules (rules/recommend.smk, issue 14).
from teachfit.generation.dataset import source_label
from teachfit.generation.per_instruction import source_label as per_instruction_label

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
        elif entry["kind"] == "per_instruction":
            out[g] = per_instruction_label(entry["per_instruction"])
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


def select_data_scoring(wildcards):
    """The scoring job settings of the entry's convention (teachfit.studies.recommend.select_data_convention)."""
    from teachfit.studies.recommend import select_data_convention

    return convention_settings(
        config["scoring"], select_data_convention(select_data_entry(wildcards))
    )


def select_data_settings(wildcards):
    entry = select_data_entry(wildcards)
    return {
        "metric": entry["metric"],
        "top_percent": float(entry["top_percent"]),
        "per_instruction": entry["per_instruction"],
    }


def gpus_select_data(wildcards):
    return model_gpus(select_data_student(wildcards))
