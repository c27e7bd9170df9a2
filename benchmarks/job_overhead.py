"""Where a workflow run's time went: per rule, Snakemake's wall time split into process start
and imports, model loading, compute, and Snakemake's own work (teachfit.logs.job_times).

    python benchmarks/job_overhead.py [--results results] [--csv-out FILE]

Run after a complete `make run`; part of `make bench` when results/benchmarks exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from teachfit.logs import job_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default="results")
    ap.add_argument("--csv-out", default=None)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    df = job_times(args.results)
    with_parts = df.filter(df["startup_s"].is_not_null())
    import polars as pl

    with pl.Config(tbl_rows=200, tbl_cols=10, tbl_hide_dataframe_shape=True):
        print(df)
    if args.csv_out:
        Path(args.csv_out).parent.mkdir(parents=True, exist_ok=True)
        df.write_csv(args.csv_out)
    if args.json_out:
        total = df.filter(df["rule"] == "TOTAL").to_dicts()[0]
        Path(args.json_out).write_text(json.dumps({"rules": df.to_dicts(), "total": total,
                                                   "rules_with_parts": with_parts.height - 1}, indent=2) + "\n")


if __name__ == "__main__":
    main()
