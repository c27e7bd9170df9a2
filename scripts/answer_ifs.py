"""Snakemake adapter: answers of a model (all prompt formats) or of every checkpoint of a run."""

from teachfit.logs import log_to
from teachfit.studies.ifs.answers import answer_ifs

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
answer_ifs(
    prompts_path=snakemake.input["prompts"],  # noqa: F821
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    sft_dir=snakemake.input.get("sft_dir"),  # noqa: F821
    out_path=snakemake.output["answers"],  # noqa: F821
    params=snakemake.params["answer"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
