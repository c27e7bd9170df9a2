"""Snakemake adapter: responses vs continuations for the tone classifier."""

from teachfit.logs import log_to
from teachfit.studies.ifs.tone import make_tone_data

log_to(snakemake.log["log"])  # noqa: F821
make_tone_data(
    pairs_paths=list(snakemake.input["pairs"]),  # noqa: F821
    out_path=snakemake.output["data"],  # noqa: F821
    seed=snakemake.params["seed"],  # noqa: F821
    heldout_share=snakemake.params["heldout_share"],  # noqa: F821
)
