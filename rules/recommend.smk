# Recommend a teacher and select data without fine-tuning (issue 14; functions in
# teachfit.studies.recommend and teachfit.generation.dataset):
# - generator kind `dataset`: an existing data set's responses, joined to the study's
#   instructions (import_responses), then the same rewards / scores / metrics as a model's;
# - rank_teachers: candidates ranked by CAR and the other data metrics, per student (no SFT or
#   evaluation in its DAG unless teacher.ranking.measured asks for the predicted-vs-measured check);
# - select_data: a user data set -> its top-k% as a ready-to-train chat-messages JSONL.
# Input functions: teachfit.workflow.inputs (bound in rules/recommend_inputs.smk).


rule download_generator_dataset:
    output:
        raw=paths.downloaded_generator("{generator}"),
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
        generations=paths.generations("{dataset}", "{generator}"),
        join_report=paths.join_report("{dataset}", "{generator}"),
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
        data_metrics=paths.table("teacher_data_metrics"),
        join_reports=ranking_join_reports,
        measured=ranking_measured,
    output:
        table=report(
            paths.table("teacher_ranking"),
            caption="report/teacher_ranking_table.rst",
            category="Recommendation",
        ),
        figure=report(
            paths.figure("teacher/ranking"),
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
        bootstrap=config["teacher"]["ranking"]["bootstrap"],
    script:
        "../scripts/rank_teachers.py"


rule download_select_data:
    output:
        raw=paths.downloaded_select_data("{name}"),
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
        pairs=paths.select_data("{name}", "pairs.parquet"),
        rejected=paths.select_data("{name}", "rejected.parquet"),
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
        responses=paths.select_data("{name}", "pairs.parquet"),
        model_dir=select_data_student_dir,
    output:
        scores=paths.select_data("{name}", "scores.parquet"),
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
        scoring=select_data_scoring,
        scorer=select_data_student,
    script:
        "../scripts/score_losses.py"


rule select_data:
    input:
        pairs=paths.select_data("{name}", "pairs.parquet"),
        rejected=paths.select_data("{name}", "rejected.parquet"),
        scores=paths.select_data("{name}", "scores.parquet"),
    output:
        selected=paths.select_data("{name}", "selected.jsonl"),
        decisions=paths.select_data("{name}", "decisions.csv"),
        summary=report(
            paths.table("select_data_{name}"),
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
