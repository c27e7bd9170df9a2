"""Snakemake adapter: full data or the top-k% by a selection metric."""

from teachfit.logs import log_to
from teachfit.training.selection import select_trainset

log_to(snakemake.log["log"])  # noqa: F821
select_trainset(
    responses_path=snakemake.input["responses"],  # noqa: F821
    scores_paths=list(snakemake.input["scores"]),  # noqa: F821
    out_path=snakemake.output["trainset"],  # noqa: F821
    selection=snakemake.params["selection"],  # noqa: F821
    label=snakemake.wildcards["selection"],  # noqa: F821
)
