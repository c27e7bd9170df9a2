"""Snakemake adapter: merge rounds per evolver and equalize set sizes across evolvers."""

from teachfit.logs import log_to
from teachfit.studies.evolver.sets import merge_evolved

log_to(snakemake.log["log"])  # noqa: F821
merge_evolved(
    round_paths=list(snakemake.input["rounds"]),  # noqa: F821
    drops_paths=list(snakemake.input["drops"]),  # noqa: F821
    merged_path=snakemake.output["merged"],  # noqa: F821
    drops_out=snakemake.output["drops"],  # noqa: F821
    evolvers=snakemake.params["evolvers"],  # noqa: F821
    equalize=snakemake.params["equalize"],  # noqa: F821
    use_rounds=snakemake.params["use_rounds"],  # noqa: F821
    seed=snakemake.params["seed"],  # noqa: F821
)
