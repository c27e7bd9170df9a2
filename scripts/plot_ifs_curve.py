"""Rule plot_ifs_curve: IFS and ObjecQA vs examples seen, plateau marked."""

from teachfit.studies.ifs.scores import plot_ifs_curve
from teachfit.workflow.adapter import run

run(plot_ifs_curve, snakemake)  # noqa: F821
