"""Snakemake adapter: IFS curve of one run and its plateau-selected checkpoint."""

from teachfit.logs import log_to
from teachfit.studies.ifs.scores import select_checkpoint

log_to(snakemake.log["log"])  # noqa: F821
select_checkpoint(
    scores_path=snakemake.input["scores"],  # noqa: F821
    train_log_path=snakemake.input["train_log"],  # noqa: F821
    selected_path=snakemake.output["selected"],  # noqa: F821
    curve_path=snakemake.output["curve"],  # noqa: F821
    early_stopping=snakemake.params["early_stopping"],  # noqa: F821
    run=dict(snakemake.wildcards),  # noqa: F821
)
