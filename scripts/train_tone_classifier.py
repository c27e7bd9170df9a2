"""Snakemake adapter: fine-tune the response-tone classifier; held-out metrics."""

from teachfit.logs import log_to
from teachfit.studies.ifs.tone import train_classifier

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
train_classifier(
    data_path=snakemake.input["data"],  # noqa: F821
    encoder_dir=snakemake.input["encoder_dir"],  # noqa: F821
    out_dir=snakemake.output["classifier"],  # noqa: F821
    metrics_csv=snakemake.output["metrics"],  # noqa: F821
    settings=snakemake.params["classifier"],  # noqa: F821
    seed=snakemake.params["seed"],  # noqa: F821
)
