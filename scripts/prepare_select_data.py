"""Rule prepare_select_data: a user data set -> the pairs to score and the rows that cannot be used."""

from teachfit.studies.recommend import prepare_select_data
from teachfit.workflow.adapter import run

run(prepare_select_data, snakemake)  # noqa: F821
