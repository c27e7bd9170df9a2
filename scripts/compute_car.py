"""Rule compute_car: CAR = (r + offset) / (1 + beta * L) per (generator, base)."""

from teachfit.studies.teacher import compute_car
from teachfit.workflow.adapter import run

run(compute_car, snakemake)  # noqa: F821
