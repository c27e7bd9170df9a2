"""Rule prepare_seeds: Seed file -> instructions Parquet."""

from teachfit.seeds import prepare_seeds
from teachfit.workflow import run

run(prepare_seeds, snakemake)  # noqa: F821
