"""Rule build_ifs_tables: IFS tables (models, checkpoints, early stopping)."""

from teachfit.studies.ifs.scores import build_ifs_tables
from teachfit.workflow.adapter import run

run(build_ifs_tables, snakemake)  # noqa: F821
