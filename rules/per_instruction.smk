# Generator kind per_instruction (a mixed teacher): per instruction, one of several generators'
# responses chosen by a criterion (student_likelihood = GRAPE, reward, car); written as a
# generations table so that it goes through score_rewards -> select_responses -> scores, SFT and
# evaluation like any generator. Functions: teachfit.generation.per_instruction (rule),
# teachfit.workflow.inputs (per_instruction_*; bound in rules/study_inputs.smk).
rule mix_responses:
    input:
        candidates=per_instruction_candidates,
        scores=per_instruction_scores,
    output:
        generations=paths.generations("{dataset}", "{generator}"),
        report=paths.choice_report("{dataset}", "{generator}"),
    log:
        log="results/logs/mix_responses/{dataset}/{generator}.log",
    benchmark:
        "results/benchmarks/mix_responses/{dataset}/{generator}.tsv"
    wildcard_constraints:
        generator=PLAN.alternation("per_instruction_generators"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        name="{generator}",
        candidate_names=per_instruction_names,
        entry=per_instruction_entry,
        car=config["teacher"]["car"],
    script:
        "../scripts/mix_responses.py"
