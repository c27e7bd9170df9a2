"""Snakemake adapter: AutoIF (verifiable instructions, sandboxed verifier cross-validation)."""

from teachfit.logs import log_to
from teachfit.studies.evolver.autoif import evolve_autoif

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
evolve_autoif(
    seeds_path=snakemake.input["seeds"],  # noqa: F821
    seed_instructions_path=snakemake.input["seed_instructions"],  # noqa: F821
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    out_path=snakemake.output["evolved"],  # noqa: F821
    drops_path=snakemake.output["drops"],  # noqa: F821
    verifiers_path=snakemake.output["verifiers"],  # noqa: F821
    evolver=snakemake.wildcards["evolver"],  # noqa: F821
    params=snakemake.params["evolve"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
