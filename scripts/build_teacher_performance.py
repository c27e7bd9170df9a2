"""Snakemake adapter: benchmark scores per (base, generator) and their average."""

from teachfit.logs import log_to
from teachfit.studies.teacher import build_teacher_performance

log_to(snakemake.log["log"])  # noqa: F821
build_teacher_performance(
    eval_paths=list(snakemake.input["evals"]),  # noqa: F821
    winrate_paths=list(snakemake.input["winrates"]),  # noqa: F821
    out_csv=snakemake.output["table"],  # noqa: F821
    design=snakemake.params["design"],  # noqa: F821
    performance=snakemake.params["performance"],  # noqa: F821
    winrate=snakemake.params["winrate"],  # noqa: F821
)
