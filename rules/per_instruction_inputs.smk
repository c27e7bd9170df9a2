# Input and params functions of the mix_responses job (rules/per_instruction.smk), one-line
# delegators to teachfit.workflow.inputs_per_instruction.
from teachfit.workflow import inputs_per_instruction


def per_instruction_candidates(wildcards):
    return inputs_per_instruction.candidate_responses(
        config, wildcards.dataset, wildcards.generator
    )


def per_instruction_scores(wildcards):
    return inputs_per_instruction.candidate_scores(
        config, wildcards.dataset, wildcards.generator
    )


def per_instruction_names(wildcards):
    return inputs_per_instruction.candidate_names(config, wildcards.generator)


def per_instruction_entry(wildcards):
    return inputs_per_instruction.entry(config, wildcards.generator)
