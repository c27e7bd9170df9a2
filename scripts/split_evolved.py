"""Rule split_evolved: one ranked evolver's equal-size set (instructions and the teacher's responses)."""

from teachfit.studies.evolver.sets import split_evolved
from teachfit.workflow.adapter import run

run(split_evolved, snakemake)  # noqa: F821
