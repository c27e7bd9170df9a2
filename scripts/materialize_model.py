"""Rule materialize_model: Materialize one model entry into a safetensors directory."""

from teachfit.models import materialize_model
from teachfit.workflow.adapter import run

run(materialize_model, snakemake)  # noqa: F821
