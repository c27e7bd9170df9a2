"""Snakemake adapter: IFS and ObjecQA vs examples seen, plateau marked."""

from teachfit.logs import log_to
from teachfit.studies.ifs.scores import plot_ifs_curve

log_to(snakemake.log["log"])  # noqa: F821
plot_ifs_curve(
    curve_path=snakemake.input["curve"],  # noqa: F821
    out_png=snakemake.output["figure"],  # noqa: F821
    style=snakemake.params["style"],  # noqa: F821
)
