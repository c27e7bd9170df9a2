"""Rule train_tone_classifier: fine-tune the response-tone classifier; held-out metrics."""

from teachfit.studies.ifs.tone import train_tone_classifier
from teachfit.workflow.adapter import run

run(train_tone_classifier, snakemake)  # noqa: F821
