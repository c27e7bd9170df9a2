"""Snakemake adapter: Spearman / Kendall of each data metric with performance."""

from teachfit.logs import log_to
from teachfit.studies.teacher import correlate_teacher_metrics

log_to(snakemake.log["log"])  # noqa: F821
correlate_teacher_metrics(
    metrics_csv=snakemake.input["metrics"],  # noqa: F821
    performance_csv=snakemake.input["performance"],  # noqa: F821
    out_csv=snakemake.output["table"],  # noqa: F821
    metrics=snakemake.params["metrics"],  # noqa: F821
)
