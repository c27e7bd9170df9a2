"""Rule download_seedset: Hub data set -> raw Parquet (needs network)."""

from teachfit.seeds import download_seedset
from teachfit.workflow.adapter import run

run(download_seedset, snakemake)  # noqa: F821
