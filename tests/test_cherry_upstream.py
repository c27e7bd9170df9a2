"""Teachfit's ``cherry`` convention against Cherry_LLM's own scripts (``make fidelity``).

tianyi-lab/Cherry_LLM ``cherry_seletion/data_analysis.py`` (``--prompt alpaca --mod cherry``)
and ``data_by_IFD.py`` run unmodified in a child process (``tests/cherry_upstream.py``: only
the LLaMA classes they hard-code become transformers' Auto classes; paths and device are
arguments) on a small Alpaca JSON, with the real SmolLM2-135M and gemma-3-270m, at windows 512
and 128. Compared per example with Teachfit's ``cherry`` default
(``scoring.conventions.cherry.answer_window: reference``): L(A|Q), L(A) and IFD of every pair the
reference keeps (1e-4 relative), the kept set (not dropped by l.92 / 97-101 and IFD <= 1), and
the top-k the reference selects (``--sample_number``).

Needs ``TEACHFIT_CHERRY_LLM_DIR`` = a checkout of Cherry_LLM (skips without it; ``make
fidelity`` passes it through) and ``TEACHFIT_FIDELITY=1``; the models come from
``results/models/{smollm2,gemma270m}`` (or ``$TEACHFIT_MODELS_DIR``). Writes the measured
numbers to ``$TEACHFIT_CHERRY_OUT`` (JSON) when set.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from real_models import real_model_dir
from test_fidelity import PAIRS

pytestmark = [
    pytest.mark.fidelity,
    pytest.mark.skipif(os.environ.get("TEACHFIT_FIDELITY") != "1",
                       reason="real-model fidelity checks run with make fidelity (TEACHFIT_FIDELITY=1)"),
    pytest.mark.skipif(not os.environ.get("TEACHFIT_CHERRY_LLM_DIR"),
                       reason="TEACHFIT_CHERRY_LLM_DIR (a Cherry_LLM checkout) is not set"),
]

HERE = Path(__file__).resolve().parent
TOL = 1e-4
TOP_K = 5
# long responses: at window 128 the answer-alone pass is cut, where the 4 of data_by_IFD.py:94 matters
LONG = [
    ("Describe how to make a cup of tea.", "",
     " ".join(["Boil fresh water, warm the pot, add one spoon of leaves per cup, pour the water over "
               "the leaves and let them steep for four minutes before you pour."] * 3)),
    ("Explain what a prime number is.", "",
     " ".join(["A prime number is a whole number greater than one whose only divisors are one and "
               "itself, so 2, 3, 5, 7 and 11 are prime while 4, 6, 8 and 9 are not."] * 3)),
]
DATA = [{"instruction": q, "input": i or "", "output": a} for q, i, a in PAIRS] + \
    [{"instruction": q, "input": i, "output": a} for q, i, a in LONG]
RESULTS: dict[str, dict] = {}


def _upstream(script: str, args: list[str], cwd: Path, capture: Path | None = None) -> None:
    src = Path(os.environ["TEACHFIT_CHERRY_LLM_DIR"]) / "cherry_seletion" / script
    if not src.is_file():
        pytest.fail(f"TEACHFIT_CHERRY_LLM_DIR: no cherry_seletion/{script} in {src.parents[1]}")
    cmd = [sys.executable, str(HERE / "cherry_upstream.py"), str(src.resolve())]
    cmd += ["--capture", str(capture)] if capture else []
    proc = subprocess.run([*cmd, "--", *args], cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module", params=["smollm2", "gemma270m"])
def real(request):
    path = real_model_dir(request.param)
    if path is None:
        pytest.skip(f"results/models/{request.param} is not materialised")
    return request.param, path


@pytest.mark.parametrize("max_length", [512, 128])
def test_cherry_equals_data_analysis_and_data_by_ifd(real, max_length, tmp_path):
    from teachfit.schema import defaults
    from teachfit.scoring.losses import ScoringSettings, convention_settings, score_pairs

    alias, model = real
    data = tmp_path / "data.json"
    data.write_text(json.dumps(DATA, indent=1), encoding="utf-8")
    common = ["--model_name_or_path", str(model), "--max_length", str(max_length), "--prompt", "alpaca"]
    _upstream("data_analysis.py", ["--data_path", str(data), "--save_path", str(tmp_path / "an.pt"),
                                   "--mod", "cherry", *common], tmp_path)
    _upstream("data_by_IFD.py", ["--pt_data_path", str(tmp_path / "an.pt"), "--json_data_path", str(data),
                                 "--json_save_path", str(tmp_path / "sel.json"),
                                 "--sample_number", str(TOP_K), *common], tmp_path, tmp_path / "lists.json")
    lists = json.loads((tmp_path / "lists.json").read_text())
    ref_ifd = {i: v for v, i in lists["mean_rate_list"]}
    ref_a = {i: v for v, i in lists["mean_list_1"]}
    ref_aq = {i: v for v, i in lists["mean_list_2"]}
    selected = json.loads((tmp_path / "sel.json").read_text())

    job = convention_settings(defaults("scoring"), "cherry")
    assert job["answer_window"] == "reference"
    job["max_length"] = max_length
    df = score_pairs(model, [d["instruction"] for d in DATA], [d["output"] for d in DATA],
                     ScoringSettings.from_dict(job), inputs=[d["input"] for d in DATA])
    aq, a = df["loss_a_given_q"].to_numpy(), df["loss_a"].to_numpy()
    ifd = aq / a
    kept = {i for i in range(len(DATA)) if math.isfinite(ifd[i]) and ifd[i] <= 1}
    assert kept == set(ref_ifd), (alias, max_length, sorted(kept), sorted(ref_ifd))
    rel = max(max(abs(aq[i] - ref_aq[i]) / ref_aq[i], abs(a[i] - ref_a[i]) / ref_a[i],
                  abs(ifd[i] - ref_ifd[i]) / ref_ifd[i]) for i in kept)
    assert rel <= TOL, (alias, max_length, rel)
    top = sorted(kept, key=lambda i: -ifd[i])[:TOP_K]
    assert [DATA[i] for i in sorted(top)] == selected
    dropped = sorted(set(range(len(DATA))) - kept)
    RESULTS.setdefault(alias, {})[f"cherry@{max_length}"] = {
        "n_pairs": len(DATA), "n_kept": len(kept), "dropped": dropped,
        "dropped_by_window_rules": [i for i in dropped if df["prompt_overflow"][i]],
        "max_rel_diff": rel, "n_truncated": int(df["truncated"].sum()),
        "same_ranking": bool(np.array_equal(sorted(kept, key=lambda i: -ifd[i]),
                                            sorted(kept, key=lambda i: -ref_ifd[i]))),
        "ifd": {str(i): [float(ifd[i]), ref_ifd.get(i)] for i in range(len(DATA))},
    }


@pytest.fixture(scope="module", autouse=True)
def write_results():
    yield
    print(json.dumps(RESULTS, indent=1))
    out = os.environ.get("TEACHFIT_CHERRY_OUT")
    if out and RESULTS:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(RESULTS, indent=1) + "\n")
