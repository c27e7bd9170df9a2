"""Rule compute_data_metrics: data metrics per (generator, base) of the teacher study (no CAR yet)."""

from teachfit.studies.teacher import compute_data_metrics
from teachfit.workflow.adapter import run

run(compute_data_metrics, snakemake)  # noqa: F821
