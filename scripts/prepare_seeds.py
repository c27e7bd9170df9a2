"""Rule prepare_seeds: Seed file -> instructions Parquet."""

from teachfit.seeds import prepare_seeds
from teachfit.workflow.adapter import run

run(prepare_seeds, snakemake)  # noqa: F821
