# Seed instruction sets -> results/instructions/{seedset}.parquet (stable ids, provenance).
# Functions: teachfit.seeds.prepare_seeds, teachfit.seeds.download_seedset.


rule prepare_seeds:
    input:
        source=seedset_file,
    output:
        instructions=paths.instructions("{seedset}"),
    log:
        log="results/logs/prepare_seeds/{seedset}.log",
    benchmark:
        "results/benchmarks/prepare_seeds/{seedset}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    params:
        entry=seedset_entry,
        seedset="{seedset}",
    script:
        "../scripts/prepare_seeds.py"


rule download_seedset:
    output:
        raw=paths.downloaded_seeds("{seedset}"),
    log:
        log="results/logs/download_seedset/{seedset}.log",
    benchmark:
        "results/benchmarks/download_seedset/{seedset}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        entry=seedset_entry,
    script:
        "../scripts/download_seedset.py"
