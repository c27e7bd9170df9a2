"""Snakemake adapter: L(Q), L(A|Q), L(A) of every kept response under one scorer."""

from teachfit.logs import log_to
from teachfit.scoring.losses import score_losses

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
score_losses(
    responses_path=snakemake.input["responses"],  # noqa: F821
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    out_path=snakemake.output["scores"],  # noqa: F821
    scoring=snakemake.params["scoring"],  # noqa: F821
    scorer=snakemake.wildcards["scorer"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
