# Training sets (full data or a selected top-k%) and SFT (trl SFTTrainer + peft).
# The trainer's resume state lives in results/scratch/sft/... (not a declared
# output, so Snakemake never deletes it): a killed or preempted job resumes from
# its last checkpoint.


rule select_trainset:
    input:
        responses=paths.responses("{dataset}", "{generator}"),
        scores=selection_scores,
    output:
        trainset=paths.trainset("{dataset}", "{generator}", "{selection}"),
    log:
        log="results/logs/select_trainset/{dataset}/{generator}/{selection}.log",
    benchmark:
        "results/benchmarks/select_trainset/{dataset}/{generator}/{selection}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        selection=selection_settings,
        label="{selection}",
    script:
        "../scripts/select_trainset.py"


rule train_sft:
    input:
        trainset=paths.trainset("{dataset}", "{generator}", "{selection}"),
        model_dir=base_dir,
    output:
        sft_dir=directory(paths.sft(paths.RUN)),
        train_log=paths.train_log(paths.RUN),
    log:
        log="results/logs/train_sft/{dataset}/{generator}/{selection}/{base}.log",
    benchmark:
        "results/benchmarks/train_sft/{dataset}/{generator}/{selection}/{base}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=gpus_train,
    params:
        sft=config["sft"],
        scratch="results/scratch/sft/{dataset}/{generator}/{selection}/{base}",
        nproc=gpus_train,
    script:
        "../scripts/train_sft.py"
