# Response generation (transformers on CPU, vLLM on GPU nodes, or an OpenAI-compatible
# endpoint), rewards, and the kept response per instruction (first / best-of-n / worst-of-n
# by reward). Functions: teachfit.generation.responses, teachfit.scoring.rewards.


rule generate_responses:
    input:
        instructions=instructions_file,
        model_dir=generator_model_dir,
    output:
        generations=paths.generations("{dataset}", "{generator}"),
    log:
        log="results/logs/generate_responses/{dataset}/{generator}.log",
    benchmark:
        "results/benchmarks/generate_responses/{dataset}/{generator}.tsv"
    wildcard_constraints:
        generator=PLAN.alternation("model_generators"),
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_generator,
    params:
        name="{generator}",
        generator=generator_entry,
        backend=generator_backend,
        generation=config["generation"],
        shard_dir="results/scratch/generations/{dataset}/{generator}",
    script:
        "../scripts/generate_responses.py"


rule score_rewards:
    input:
        generations=paths.generations("{dataset}", "{generator}"),
        model_dir=reward_model_dir,
    output:
        rewards=paths.rewards("{dataset}", "{generator}"),
    log:
        log="results/logs/score_rewards/{dataset}/{generator}.log",
    benchmark:
        "results/benchmarks/score_rewards/{dataset}/{generator}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_reward,
    params:
        reward=reward_settings,
    script:
        "../scripts/score_rewards.py"


# The evolved sets' responses come from their pools (rule split_evolved), so this rule answers
# every data set but those.
rule select_responses:
    input:
        generations=paths.generations("{dataset}", "{generator}"),
        rewards=paths.rewards("{dataset}", "{generator}"),
    output:
        responses=paths.responses("{dataset}", "{generator}"),
    log:
        log="results/logs/select_responses/{dataset}/{generator}.log",
    benchmark:
        "results/benchmarks/select_responses/{dataset}/{generator}.tsv"
    wildcard_constraints:
        dataset=PLAN.alternation("answered"),
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        select=generator_select,
    script:
        "../scripts/select_responses.py"
