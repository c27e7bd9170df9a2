"""`teachfit rank-teachers` on the default config's real small models (issue 14's speed target:
4 generators x 1 base on 16 instructions in a few minutes on 2 CPU cores, models materialised).

In a scratch copy of the workflow (no results), with the materialised models linked from
``--models-from``, it times:

1. ``teachfit rank-teachers`` -- the default config's 4 generators (SmolLM2 greedy / T=0.8 /
   best-of-3, gemma-3-270m few-shot) x gemma-3-270m on the 16 ``teacher`` instructions: generation,
   rewards, loss scoring, metrics, ranking; no SFT, no evaluation;
2. ``teachfit rank-teachers --add-dataset answers=<file>`` -- the same plus a dataset generator
   from a file this script writes (our own Alpaca-style answers to 14 of the 16 instructions, one
   duplicate row and one row for an instruction the study does not have): only the new
   generator's jobs and the tables run.

Prints and writes (``--json-out``) the wall times, the job counts and the ranking table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "scripts", "envs", "profiles", "config"]
MODELS = ("smollm2", "gemma270m")

#: Our own answers to the default `teacher` seed set (config/seeds/general.jsonl, first 16), Alpaca layout.
ANSWERS = [
    ("Explain why the sky looks blue during the day but red at sunset.",
     None,
     ("Air molecules scatter short blue wavelengths of sunlight much more than long red ones, so "
      "the daytime sky looks blue. At sunset the light crosses far more air, most blue light is "
      "scattered away before it reaches us, and the remaining reds and oranges dominate.")),
    ("Write a short thank-you note to a neighbour who watered my plants while I was away.",
     None,
     ("Dear neighbour, thank you so much for watering my plants while I was away. They are green "
      "and happy, and I am very grateful for your kindness. Please let me know when I can return "
      "the favour!")),
    ("Give three tips for staying focused while studying at home.",
     None,
     ("1. Keep your phone in another room. 2. Work in short timed blocks with breaks in between. "
      "3. Study at the same desk every day and keep it free of clutter.")),
    ("Summarize the following paragraph in one sentence.",
     ("Bees visit flowers to collect nectar and pollen. While doing so, they carry pollen from "
      "one flower to another, which allows many plants to produce fruit and seeds. Without bees, "
      "the yield of crops such as apples and almonds would drop sharply."),
     ("By carrying pollen between flowers, bees let many plants, including crops like apples and "
      "almonds, produce fruit and seeds.")),
    ("Translate the sentence into French.",
     "The library opens at nine o'clock tomorrow morning.",
     "La bibliothèque ouvre à neuf heures demain matin."),
    ("What is the difference between weather and climate?",
     None,
     ("Weather is the state of the atmosphere at a given time and place, such as today's rain. "
      "Climate is the average pattern of weather in a region over many years.")),
    ("Suggest a name for a small bakery that specializes in rye bread.",
     None,
     "The Rye Corner."),
    ("Write a haiku about the first snow of winter.",
     None,
     "Silent flakes drifting\nthe garden forgets its green\nfirst white breath of cold"),
    ("List the planets of the solar system in order from the Sun.",
     None,
     "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune."),
    ("Classify each animal as a mammal, bird, or reptile: dolphin, crocodile, penguin, bat, gecko.",
     None,
     "Dolphin: mammal. Crocodile: reptile. Penguin: bird. Bat: mammal. Gecko: reptile."),
    ("Describe how a bill becomes a law in a parliamentary democracy, in simple terms.",
     None,
     ("A bill is proposed in parliament, debated and amended in several readings and committees, "
      "voted on by the chambers, and finally signed by the head of state, after which it becomes "
      "law.")),
    ("Give me a packing list for a two-day hiking trip in the mountains.",
     None,
     ("Backpack, map, water bottles, snacks and meals, warm layers, rain jacket, hiking boots, "
      "first-aid kit, headlamp, sunscreen, sleeping bag and a small stove.")),
    ("Explain what a budget is and why a household might keep one.",
     None,
     ("A budget is a plan of expected income and spending. A household keeps one to see where "
      "money goes, avoid debt and save for future goals.")),
    ("What are the main causes of soil erosion, and how can farmers reduce it?",
     None,
     ("Wind and water carry away bare soil, especially after overgrazing, deforestation or "
      "ploughing on slopes. Farmers reduce erosion with cover crops, contour ploughing, terraces "
      "and hedgerows.")),
    # a second answer to an instruction already answered (counted as a duplicate, the first is kept)
    ("What is the difference between weather and climate?",
     None,
     "Weather is short term, climate is long term."),
    # an instruction the study does not have (counted as unmatched)
    ("Name three musical instruments.",
     None,
     "Piano, violin and flute."),
]


def write_answers(path: Path) -> Path:
    rows = [{"instruction": q, "input": i or "", "output": a} for q, i, a in ANSWERS]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def scratch_workflow(models_from: Path) -> Path:
    wf = Path(tempfile.mkdtemp(prefix="teachfit-rank-"))
    for item in WORKFLOW:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, wf / item, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, wf / item)
    (wf / "results" / "models").mkdir(parents=True)
    for alias in MODELS:
        src = (models_from / alias).resolve()
        if not (src / "config.json").exists():
            raise SystemExit(f"{src}: not a materialised model; run `snakemake --cores 2 results/models/{alias}` first")
        (wf / "results" / "models" / alias).symlink_to(src, target_is_directory=True)
    return wf


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, int]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}); log: {log}\n" + log.read_text()[-4000:])
    jobs = 0
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            jobs = int(parts[1])
    return seconds, jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-from", type=Path, default=ROOT / "results" / "models",
                    help="folder holding the materialised smollm2 and gemma270m (default: results/models)")
    ap.add_argument("--cores", default="2")
    ap.add_argument("--json-out", type=Path, default=ROOT / "results" / "benchmarks" / "bench_rank_teachers.json")
    ap.add_argument("--keep", action="store_true", help="keep the scratch workflow (its path is printed)")
    args = ap.parse_args()
    wf = scratch_workflow(args.models_from)
    cli = [sys.executable, "-m", "teachfit.workflow.cli", "rank-teachers", "--cores", args.cores]
    out: dict = {"workdir": str(wf), "cores": args.cores}
    try:
        s1, j1 = timed(cli, wf, wf / "rank_teachers.log")
        out["default_4_generators"] = {"seconds": round(s1, 1), "jobs": j1}
        answers = write_answers(wf / "answers.jsonl")
        s2, j2 = timed([*cli, "--add-dataset", f"answers={answers}"], wf, wf / "rank_teachers_dataset.log")
        out["plus_dataset_generator"] = {"seconds": round(s2, 1), "jobs": j2}
        out["ranking"] = (wf / "results" / "tables" / "teacher_ranking.csv").read_text()
        out["verdict"] = (wf / "results" / "recommend" / "teacher_verdict.rst").read_text()
        out["join_report"] = json.loads((wf / "results" / "generations" / "teacher" / "answers.join.json").read_text())
    finally:
        if not args.keep:
            shutil.rmtree(wf, ignore_errors=True)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("ranking", "verdict")}, indent=2))
    print(out["ranking"])
    print(out["verdict"])


if __name__ == "__main__":
    main()
