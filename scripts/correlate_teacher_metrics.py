"""Rule correlate_teacher_metrics: Spearman / Kendall of each data metric with performance."""

from teachfit.studies.teacher import correlate_teacher_metrics
from teachfit.workflow.adapter import run

run(correlate_teacher_metrics, snakemake)  # noqa: F821
