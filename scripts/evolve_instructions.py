"""Snakemake adapter: one evolution round (Evol-Instruct or Auto Evol-Instruct)."""

from teachfit.logs import log_to
from teachfit.studies.evolver.evolve import evolve_instructions

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
evolve_instructions(
    previous_path=snakemake.input["previous"],  # noqa: F821
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    out_path=snakemake.output["evolved"],  # noqa: F821
    drops_path=snakemake.output["drops"],  # noqa: F821
    top1_path=snakemake.output["top1"],  # noqa: F821
    evolver=snakemake.wildcards["evolver"],  # noqa: F821
    round_k=int(snakemake.wildcards["k"]),  # noqa: F821
    params=snakemake.params["evolve"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
