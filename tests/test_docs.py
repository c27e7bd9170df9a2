"""The documentation: README.md stays a front door (size), every relative link of README.md and
docs/*.md reaches a file, every `make <target>` they name exists, and docs/measurements.md's
writer (benchmarks/write_measurements.py) renders a results folder."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 12 * 1024
#: Pages written on other branches; linked already, checked once they exist.
PAGES_ADDED_ELSEWHERE = {"docs/layout.md", "docs/dag.md", "docs/environments.md", "docs/multi-gpu.md",
                         "docs/fidelity.md", "docs/teacher-measures.md"}
#: Written by `make measurements` (benchmarks/write_measurements.py) from a finished default run.
GENERATED_FIGURES = {"docs/img/ifs_curve.png"}
LINK = re.compile(r"\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")
MAKE = re.compile(r"`make ([a-z][a-z0-9-]*)")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Relative link targets of a markdown file, without their #fragment (code blocks skipped)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    out = []
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def test_readme_is_at_most_12_kb():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail to docs/ (limit {README_MAX_BYTES})"


def test_every_relative_link_reaches_a_file():
    broken = []
    for doc in doc_files():
        for target in relative_links(doc):
            path = (doc.parent / target).resolve()
            rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
            if not path.exists() and rel not in PAGES_ADDED_ELSEWHERE | GENERATED_FIGURES:
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [gone](missing.md#x) [web](https://example.org) [anchor](#y)\n"
                    "```\n[in code](nowhere.md)\n```\n")
    assert relative_links(page) == ["page.md", "missing.md"]


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    listed = set(relative_links(ROOT / "docs" / "README.md"))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    pages |= {Path(p).name for p in PAGES_ADDED_ELSEWHERE}
    assert pages <= listed, f"docs/README.md misses {sorted(pages - listed)}"
    assert "measurements.md" in index


def test_every_make_target_named_in_the_docs_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.M))
    missing = {f"{doc.relative_to(ROOT)}: make {t}" for doc in doc_files()
               for t in MAKE.findall(doc.read_text(encoding="utf-8")) if t not in targets}
    assert not missing, sorted(missing)
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^measurements:.*\n\t.*benchmarks/write_measurements\.py", makefile, flags=re.M)


# --------------------------------------------------------------------------- measurements


def _writer():
    spec = importlib.util.spec_from_file_location("write_measurements", ROOT / "benchmarks" / "write_measurements.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_run(root: Path) -> Path:
    """A results folder as a finished default run leaves it, a few rows of each kind."""
    res = root / "results"
    (res / "tables").mkdir(parents=True)
    (res / "tables" / "teacher_data_metrics.csv").write_text(
        "generator,base,n,reward,length,ppl_base,ifd_base,car,loss_convention\n"
        "smol_greedy,gemma270m,16,1.613,52.3,6.38,0.828,0.565,chat\n"
        "gemma_fewshot,gemma270m,16,1.476,26.1,2.47,0.55,0.775,chat\n")
    (res / "tables" / "teacher_metric_correlations.csv").write_text(
        "base,n,car_spearman,car_spearman_p,car_kendall,car_kendall_p\n"
        "gemma270m,4,0.6,0.4,0.33,0.75\naverage,1,0.6,,0.33,\n")
    (res / "tables" / "ifs_models.csv").write_text(
        "model,fmt,ifs,ifs_lo,ifs_hi\ngemma270m,none,0.41,0.31,0.52\n")
    (res / "tables" / "evolver_comparison.csv").write_text("seedset,evolver,performance\n")
    (res / "tables" / "selection_comparison.csv").write_text("")
    for rule, job, timing in (("train_sft", "a", {"startup_s": 1.5, "model_load_s": 0.8, "run_s": 70.0}),
                              ("train_sft", "b", {"startup_s": 1.5, "model_load_s": 0.8, "run_s": 72.0}),
                              ("plot_teacher_figures", "x", {"startup_s": 0.4, "model_load_s": 0.0, "run_s": 1.0})):
        (res / "benchmarks" / rule).mkdir(parents=True, exist_ok=True)
        (res / "benchmarks" / rule / f"{job}.tsv").write_text(
            f"s\th:m:s\tmax_rss\n{timing['run_s'] + 3:.2f}\t0:01:13\t100\n")
        (res / "logs" / rule).mkdir(parents=True, exist_ok=True)
        (res / "logs" / rule / f"{job}.log").write_text(
            "INFO teachfit.workflow: JOB_TIMING " + json.dumps({"rule": rule, **timing}) + "\n")
    log = root / ".snakemake" / "log" / "2026-12-03T125352.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("  Snakemake version: 9.27.1\nProvided cores: 2\n[Thu Dec  3 12:53:54 2026]\n"
                   "rule train_sft:\n1 of 3 steps (33%) done\n[Thu Dec  3 13:20:00 2026]\n"
                   "3 of 3 steps (100%) done\n")
    return res


def test_measurements_page_from_a_results_folder(tmp_path):
    wm = _writer()
    res = _fake_run(tmp_path)
    out = tmp_path / "docs" / "measurements.md"
    text = wm.write_measurements(res, out)
    assert out.read_text(encoding="utf-8") == text
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings[:5] == ["# Measurements", "## The default run (`make run`, `config/config.yaml`)",
                            "## Teacher study", "### Data metrics per generator and student (`teacher_data_metrics.csv`)",
                            "### Spearman ρ of each metric with performance (`teacher_metric_correlations.csv`)"]
    for h in ("## Evolver study", "## IFS study", "## Benchmarks (`make bench`)",
              "## Evolver validity gate on its labelled set (`make gate-quality`)",
              "## Scoring conventions vs the reference code (`make fidelity`)"):
        assert h in headings
    assert "Jobs: **3** (complete); wall time **26 min 6 s**" in text
    assert "| train_sft | 2 | 148 | 3.0 | 1.6 | 140 | 3.0 |" in text
    assert "| **total** | 3 | 152 |" in text
    assert "| smol_greedy | gemma270m | 16 | 1.613 | 52.3 | 6.380 | 0.828 | 0.565 |" in text
    assert "loss_convention" not in text  # not among the columns shown
    assert "| car | 0.600 | 0.400 | 0.600 |" in text
    assert "| gemma270m | none | 0.410 (0.310–0.520) |" in text
    assert "No rows (the CSV has only its header: seedset, evolver, performance)." in text
    assert "### Data selection (`selection_comparison.csv`)\n\nNo rows (the CSV is empty)." in text
    assert text.count("not measured: run `make bench`") == 1
    assert "not measured: run `make gate-quality`" in text and "not measured: run `make fidelity`" in text
    assert not (tmp_path / "docs" / "img").exists()  # the run made no figure: nothing copied


def test_measurements_copy_the_readme_figure(tmp_path):
    wm = _writer()
    res = _fake_run(tmp_path)
    fig = res / "figures" / wm.README_FIGURE[0]
    fig.parent.mkdir(parents=True)
    fig.write_bytes(b"\x89PNG fake")
    wm.write_measurements(res, tmp_path / "docs" / "measurements.md")
    assert (tmp_path / "docs" / wm.README_FIGURE[1]).read_bytes() == b"\x89PNG fake"
    assert f"docs/{wm.README_FIGURE[1]}" in GENERATED_FIGURES
    assert f"](docs/{wm.README_FIGURE[1]})" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_measurements_page_with_bench_gate_and_fidelity(tmp_path):
    wm = _writer()
    res = _fake_run(tmp_path)
    (res / "benchmarks" / "bench_summary.json").write_text(json.dumps({
        "generation": {"ratio": 5.87, "batched_tok_s": 134.5, "sequential_tok_s": 22.9, "target": 6.0,
                       "batch_size": 64, "identical_outputs": 32, "n_prompts": 32},
        "scoring": {"ratio": 2.13, "max_rel_err": 1.9e-5, "target": 3.0, "n_pairs": 64, "work_ratio": 1.61,
                    "batched_gflop_s": 159.0, "naive_gflop_s": 119.9},
        "paper_dry_run": {"seconds": 19.5, "jobs": 1637, "target_s": 20.0, "passed": True}}))
    (res / "gate").mkdir()
    (res / "gate" / "quality.csv").write_text(
        "mode,split,kind,n,detected,exact,recall,recall_exact,precision,false_drops\n"
        "deterministic,all,all,71,69,60,0.972,0.845,0.986,1\ndeterministic,all,empty,5,5,5,1.0,1.0,1.0,0\n")
    (res / "fidelity").mkdir()
    (res / "fidelity" / "fidelity.json").write_text(json.dumps({"smollm2": {
        "cherry_512": {"n_pairs": 12, "max_abs_diff": 1.6e-5, "max_rel_diff": 6.1e-6, "spearman_ifd": 1.0},
        "sft_prompt_equals_inference_prompt": True}}))
    text = wm.write_measurements(res, tmp_path / "m.md", log=tmp_path / ".snakemake" / "log" /
                                 "2026-12-03T125352.snakemake.log")
    assert "not measured" not in text
    assert "5.87× (134.5 vs 22.9 tokens/s; batch 64; 32/32 outputs identical)" in text
    assert "2.13×, max rel. error 1.9e-05" in text
    assert "19.5 s for 1637 jobs" in text
    assert "| deterministic | all | 71 | 69 | 0.972 | 0.986 | 1 |" in text and "| empty |" not in text
    assert "| smollm2 | cherry_512 | 12 | 1.6e-05 | 6.1e-06 | 1 | – |" in text


def test_measurements_page_without_a_run(tmp_path):
    wm = _writer()
    text = wm.write_measurements(tmp_path / "results", tmp_path / "m.md")
    assert text.count("not measured: run `make run`") == 5  # log, job times, three studies


@pytest.mark.parametrize("v, s", [(None, "–"), (float("nan"), "–"), (3307.4, "3,307"), (52.34, "52.3"),
                                  (0.8281, "0.828"), (8.0, "8"), (0.0, "0.000"), (1.9e-5, "1.9e-05"), (1637, "1,637"),
                                  (True, "yes"), ("a|b", "a\\|b")])
def test_cell_format(v, s):
    assert _writer().fmt(v) == s
