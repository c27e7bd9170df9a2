# Model zoo: every configured model becomes results/models/{model}/ (safetensors
# + tokenizer + teachfit_model.json with sha256s and source) exactly once.
# Function: teachfit.models.materialize_model. No `resources: gpu`: it downloads, copies or
# dequantizes/converts weights on CPU and never runs the model.


rule materialize_model:
    output:
        model_dir=directory(paths.model("{model}")),
    log:
        log="results/logs/materialize_model/{model}.log",
    benchmark:
        "results/benchmarks/materialize_model/{model}.tsv"
    conda:
        "../envs/gen.yaml"
    threads: 2
    params:
        alias="{model}",
        entry=model_entry,
        scratch="results/scratch/models/{model}",
        seed=config["seed"],
    script:
        "../scripts/materialize_model.py"
