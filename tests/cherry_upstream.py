"""Child process of ``tests/test_cherry_upstream.py``: runs one of Cherry_LLM's own scripts
(``cherry_seletion/data_analysis.py`` or ``data_by_IFD.py``, unmodified, from a checkout named
by ``TEACHFIT_CHERRY_LLM_DIR``) with ``sys.argv`` as given.

Only what the scripts hard-code for LLaMA is swapped: ``transformers.LlamaTokenizer`` and
``LlamaForCausalLM`` are the Auto classes (so SmolLM2 and gemma-3-270m load with their own
tokenizer and architecture), and the scripts pick CPU or CUDA themselves. For ``data_by_IFD.py``
the per-example values the script computes and then discards (``mean_rate_list``,
``mean_list_1``, ``mean_list_2`` of its ``main``) are read from its frame when ``main`` returns
and written as JSON to ``--capture``.

Usage: ``python tests/cherry_upstream.py <script.py> [--capture out.json] -- <script args>``
"""

from __future__ import annotations

import json
import runpy
import sys


def main(argv: list[str]) -> None:
    import transformers

    script, rest = argv[0], argv[1:]
    capture = None
    if rest[:1] == ["--capture"]:
        capture, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    transformers.LlamaTokenizer = transformers.AutoTokenizer
    transformers.LlamaForCausalLM = transformers.AutoModelForCausalLM
    seen: dict[str, list] = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code.co_name == "main" and frame.f_code.co_filename == script:
            for name in ("mean_rate_list", "mean_list_1", "mean_list_2"):
                if name in frame.f_locals:
                    seen[name] = [(float(v), int(i)) for v, i in frame.f_locals[name]]

    sys.argv = [script, *rest]
    sys.setprofile(profile if capture else None)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.setprofile(None)
    if capture:
        with open(capture, "w", encoding="utf-8") as fh:
            json.dump(seen, fh)


if __name__ == "__main__":
    main(sys.argv[1:])
