"""Print the GPU requests of every model-loading job of a config's DAG as a Markdown table
(docs/multi-gpu.md): rule, model, method / dtype, estimate kind, GB per GPU, GPUs, engine.

    PYTHONPATH=src python benchmarks/gpu_requests.py config/paper.yaml

The DAG is parsed as tests/wiring_utils.py does (forceall, checkpoints taken as passed); the
numbers are teachfit.workflow.resources' (requests_table), at the config's gpu_mem_gb.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from wiring_utils import dag_jobs  # noqa: E402

from teachfit.schema import load_yaml  # noqa: E402
from teachfit.workflow.config import validate_config  # noqa: E402
from teachfit.workflow.resources import markdown_table, requests_table, rule_kind  # noqa: E402


def _merge(a: dict, b: dict) -> dict:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v
    return a


def main(configfile: str = "config/paper.yaml") -> str:
    config = load_yaml(ROOT / "config" / "config.yaml")
    if Path(configfile).name != "config.yaml":
        _merge(config, load_yaml(ROOT / configfile))
    validate_config(config)
    jobs = []
    for job in dag_jobs(ROOT, configfile):
        kind = rule_kind(job["rule"])
        for path in job["input"]:
            parts = Path(path).parts
            if kind and len(parts) >= 3 and parts[:2] == ("results", "models") and parts[2] in config["models"]:
                jobs.append((job["rule"], parts[2], kind))
    table = markdown_table(requests_table(config, jobs))
    print(f"gpu_mem_gb {config['gpu_mem_gb']}, node_gpus {config['node_gpus']}\n\n{table}")
    return table


if __name__ == "__main__":
    main(*sys.argv[1:])
