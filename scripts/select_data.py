"""Rule select_data: the top-k% of a user data set as a ready-to-train chat-messages JSONL."""

from teachfit.studies.recommend import select_data
from teachfit.workflow.adapter import run

run(select_data, snakemake)  # noqa: F821
