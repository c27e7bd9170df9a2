"""Snakemake adapter: teacher-study figures (heatmap, best generator, scatters)."""

from teachfit.logs import log_to
from teachfit.studies.teacher import plot_teacher_figures

log_to(snakemake.log["log"])  # noqa: F821
plot_teacher_figures(
    metrics_csv=snakemake.input["metrics"],  # noqa: F821
    performance_csv=snakemake.input["performance"],  # noqa: F821
    correlations_csv=snakemake.input["correlations"],  # noqa: F821
    heatmap=snakemake.output["heatmap"],  # noqa: F821
    best=snakemake.output["best"],  # noqa: F821
    scatter=list(snakemake.output["scatter"]),  # noqa: F821
    metrics=snakemake.params["metrics"],  # noqa: F821
    style=snakemake.params["style"],  # noqa: F821
)
