"""Snakemake adapter: IFS tables (models, checkpoints, early stopping)."""

from teachfit.logs import log_to
from teachfit.studies.ifs.scores import build_ifs_tables

log_to(snakemake.log["log"])  # noqa: F821
build_ifs_tables(
    model_scores=list(snakemake.input["models"]),  # noqa: F821
    curves=list(snakemake.input["curves"]),  # noqa: F821
    evals=list(snakemake.input["evals"]),  # noqa: F821
    outputs=dict(snakemake.output.items()),  # noqa: F821
    performance=snakemake.params["performance"],  # noqa: F821
)
