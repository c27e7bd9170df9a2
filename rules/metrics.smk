# Scoring engine: L(Q), L(A|Q), L(A) of every kept response under a scorer model
# (a student base model or the reference model) and a named convention
# (evolution_analysis | cherry | chat, teachfit.scoring.losses). IFD, IC-IFD, PPL and CAR
# derive from these columns downstream. Function: teachfit.scoring.losses.score_losses.


rule score_losses:
    input:
        responses=paths.responses("{dataset}", "{generator}"),
        model_dir=scorer_dir,
    output:
        scores=paths.scores("{dataset}", "{generator}", "{scorer}", "{convention}"),
    log:
        log="results/logs/score_losses/{dataset}/{generator}/{scorer}.{convention}.log",
    benchmark:
        "results/benchmarks/score_losses/{dataset}/{generator}/{scorer}.{convention}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    resources:
        gpu=gpus_scorer,
    params:
        scoring=scoring_settings,
        scorer="{scorer}",
    script:
        "../scripts/score_losses.py"
