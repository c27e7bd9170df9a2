"""Rule plot_teacher_figures: teacher-study figures (heatmap, best generator, scatters)."""

from teachfit.studies.teacher import plot_teacher_figures
from teachfit.workflow.adapter import run

run(plot_teacher_figures, snakemake)  # noqa: F821
