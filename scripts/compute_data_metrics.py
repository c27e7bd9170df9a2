"""Snakemake adapter: per (generator, base) data metrics (no CAR yet)."""

from teachfit.logs import log_to
from teachfit.studies.teacher import compute_data_metrics

log_to(snakemake.log["log"])  # noqa: F821
compute_data_metrics(
    responses_paths=list(snakemake.input["responses"]),  # noqa: F821
    scores_paths=list(snakemake.input["scores"]),  # noqa: F821
    out_path=snakemake.output["metrics"],  # noqa: F821
    design=snakemake.params["design"],  # noqa: F821
)
