"""Snakemake adapter: tone labels (IFS) and ObjecQA judgements of answers."""

from teachfit.logs import log_to
from teachfit.studies.ifs.answers import score_answers

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
score_answers(
    answers_path=snakemake.input["answers"],  # noqa: F821
    classifier_dir=snakemake.input["classifier"],  # noqa: F821
    judge_dir=snakemake.input["judge_dir"],  # noqa: F821
    out_path=snakemake.output["scores"],  # noqa: F821
    batch_size=snakemake.params["batch_size"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
