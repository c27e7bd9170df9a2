"""Rule build_teacher_performance: benchmark scores per (base, generator) and their average."""

from teachfit.studies.teacher import build_teacher_performance
from teachfit.workflow.adapter import run

run(build_teacher_performance, snakemake)  # noqa: F821
