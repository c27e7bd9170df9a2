"""Rule rank_teachers: candidate teachers ranked per student by CAR and the other data metrics, without fine-tuning."""

from teachfit.studies.recommend import rank_teachers
from teachfit.workflow.adapter import run

run(rank_teachers, snakemake)  # noqa: F821
