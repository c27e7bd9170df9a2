"""Snakemake adapter: one evolver's equalized instruction set."""

from teachfit.logs import log_to
from teachfit.studies.evolver.sets import split_evolved

log_to(snakemake.log["log"])  # noqa: F821
split_evolved(
    merged_path=snakemake.input["merged"],  # noqa: F821
    out_path=snakemake.output["instructions"],  # noqa: F821
    evolver=snakemake.wildcards["evolver"],  # noqa: F821
)
