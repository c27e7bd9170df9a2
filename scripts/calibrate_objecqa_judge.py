"""Rule calibrate_objecqa_judge: the ObjecQA judge's calibration shift and its accuracy before and after."""

from teachfit.studies.ifs.objecqa import calibrate_objecqa_judge
from teachfit.workflow.adapter import run

run(calibrate_objecqa_judge, snakemake)  # noqa: F821
