"""Rule evolve_autoif: AutoIF with one evolver (propose, sandbox-verify, pair)."""

from teachfit.studies.evolver.autoif import evolve_autoif
from teachfit.workflow.adapter import run

run(evolve_autoif, snakemake)  # noqa: F821
