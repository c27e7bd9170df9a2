"""Snakemake adapter: CAR = (r + offset) / (1 + beta * L) per (generator, base)."""

from teachfit.logs import log_to
from teachfit.studies.teacher import compute_car

log_to(snakemake.log["log"])  # noqa: F821
compute_car(
    metrics_path=snakemake.input["metrics"],  # noqa: F821
    out_csv=snakemake.output["table"],  # noqa: F821
    car=snakemake.params["car"],  # noqa: F821
)
