"""Measurement: lm-eval's HF backend vs its vLLM backend on the same items (issue 13, item 3).

    python benchmarks/lm_eval_backends.py --model-dir results/models/smollm2 \
        [--peft-dir <train_sft output>/adapter] --tasks tf_ifeval tf_arith --limit 8 \
        --json-out results/benchmarks/lm_eval_backends.json

Runs ``lm_eval.simple_evaluate`` twice with the settings of rule ``evaluate_model``
(:mod:`teachfit.evaluation.lm_eval`: the package's task folder, offline, chat template when the
tokenizer has one, few-shot as multi-turn, the ``eval`` schema defaults, the same seeds), once
with ``model="hf"`` and once with ``model="vllm"``, both in float32, and writes one JSON: the
scores of each backend per task and metric, how many generated responses are identical
item by item, and the wall seconds of each run. With ``--peft-dir`` both evaluate the base
model plus the LoRA adapter (HF: as rule ``evaluate_checkpoints`` does it, the adapter merged into
the base weights and handed to lm-eval's ``HFLM``, :func:`teachfit.evaluation.lm_eval.merged_lora_hflm`;
vLLM: ``lora_local_path=`` with ``max_lora_rank`` = the adapter's ``r`` rounded up to vLLM's
allowed ranks).

The vLLM engine runs eagerly (``enforce_eager``) with a KV cache of ``--kvcache-gib`` GiB on CPU
(``VLLM_CPU_KVCACHE_SPACE``, set as :class:`~teachfit.generation.vllm.VLLMBackend` does).
This is a measurement of the backends, not the rule: until ``eval.backend`` exists, rule
``evaluate_model`` runs the HF backend only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _lora_rank(peft_dir: Path) -> int:
    r = int(json.loads((peft_dir / "adapter_config.json").read_text())["r"])
    return next(x for x in VLLM_LORA_RANKS if x >= r)


def evaluate(backend: str, model_dir: Path, peft_dir: Path | None, tasks: list[str], limit: int,
             max_gen_toks: int, kvcache_gib: int, max_model_len: int) -> dict[str, Any]:
    """One ``simple_evaluate`` run; returns ``{"results": {task: {metric: value}}, "responses":
    {task: [first response per item]}, "seconds": wall}``."""
    import lm_eval

    from teachfit.schema import defaults
    from teachfit.evaluation.lm_eval import (
        BOOTSTRAP_ITERS,
        FEWSHOT_AS_MULTITURN,
        EvalSettings,
        _has_chat_template,
        _hub_offline,
        _tokenizer_dir,
        ensure_punkt_tab,
        merged_lora_hflm,
        task_manager,
    )

    cfg = EvalSettings.from_dict(defaults("eval", tasks=tasks, limit=limit, max_gen_toks=max_gen_toks))
    ensure_punkt_tab()
    chat = _has_chat_template(model_dir, peft_dir)
    tok_dir = _tokenizer_dir(model_dir, peft_dir)
    args: dict[str, Any] = {"pretrained": str(model_dir), "dtype": "float32", "trust_remote_code": False}
    if tok_dir != model_dir:
        args["tokenizer"] = str(tok_dir)
    model: Any = backend
    if backend == "hf":
        extra: dict[str, Any] = {"device": "cpu", "batch_size": cfg.batch_size}
        if peft_dir is not None:  # as rule evaluate_checkpoints runs it: the adapter merged
            args["peft"] = str(peft_dir)
            model = merged_lora_hflm(args, cfg.batch_size)
    else:
        from teachfit.generation.vllm import set_cpu_kvcache

        set_cpu_kvcache(kvcache_gib)
        args.update(max_model_len=max_model_len, seed=cfg.seed, enforce_eager=True)
        if peft_dir is not None:
            args.update(lora_local_path=str(peft_dir), max_lora_rank=_lora_rank(peft_dir))
        extra = {"batch_size": cfg.batch_size}
    t0 = time.perf_counter()
    with _hub_offline(cfg.offline):
        raw = lm_eval.simple_evaluate(
            model=model, model_args=args, tasks=list(cfg.tasks), num_fewshot=cfg.num_fewshot,
            limit=cfg.limit, bootstrap_iters=BOOTSTRAP_ITERS, log_samples=True, apply_chat_template=chat,
            fewshot_as_multiturn=FEWSHOT_AS_MULTITURN and chat, gen_kwargs={"max_gen_toks": cfg.max_gen_toks},
            task_manager=task_manager(cfg.tasks, cfg.tasks_dir()), random_seed=cfg.seed,
            numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed, **extra)
    seconds = time.perf_counter() - t0
    results = {t: {m: v for m, v in r.items() if isinstance(v, (int, float)) and "stderr" not in m}
               for t, r in raw["results"].items()}
    # lm-eval logs one sample per document and filter (tf_arith has two filters over the same
    # generation): keep one response per document, in document order
    responses = {}
    for t, samples in raw["samples"].items():
        by_doc: dict[int, str] = {}
        for s in samples:
            by_doc.setdefault(int(s["doc_id"]), s["resps"][0][0])
        responses[t] = [by_doc[d] for d in sorted(by_doc)]
    return {"results": results, "responses": responses, "seconds": round(seconds, 1), "chat_template": chat}


def compare(hf: dict[str, Any], vl: dict[str, Any]) -> dict[str, Any]:
    """Identical responses per task, and each score of both backends side by side."""
    same = {t: sum(a == b for a, b in zip(hf["responses"][t], vl["responses"][t], strict=True))
            for t in hf["responses"]}
    scores = {t: {m: {"hf": hf["results"][t][m], "vllm": vl["results"][t].get(m)} for m in hf["results"][t]}
              for t in hf["results"]}
    return {"identical_responses": same, "n_items": {t: len(r) for t, r in hf["responses"].items()},
            "scores": scores}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="results/models/smollm2")
    ap.add_argument("--peft-dir", default=None)
    ap.add_argument("--tasks", nargs="+", default=["tf_ifeval", "tf_arith"])
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--max-gen-toks", type=int, default=64)
    ap.add_argument("--kvcache-gib", type=int, default=1)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the HF run")
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args(argv)
    model_dir = Path(args.model_dir)
    peft_dir = Path(args.peft_dir) if args.peft_dir else None
    if not (model_dir / "config.json").is_file():
        print(f"{model_dir}: no config.json; materialize the model first", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    common = (model_dir, peft_dir, args.tasks, args.limit, args.max_gen_toks, args.kvcache_gib,
              args.max_model_len)
    out: dict[str, Any] = {"model_dir": str(model_dir), "peft_dir": str(peft_dir) if peft_dir else None,
                           "tasks": args.tasks, "limit": args.limit, "max_gen_toks": args.max_gen_toks}
    out["hf"] = evaluate("hf", *common)
    out["vllm"] = evaluate("vllm", *common)
    out.update(compare(out["hf"], out["vllm"]))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    for t, scores in out["scores"].items():
        for m, v in scores.items():
            print(f"{t:10s} {m:40s} hf {v['hf']:.4f}  vllm {v['vllm']:.4f}")
        print(f"{t:10s} identical responses: {out['identical_responses'][t]}/{out['n_items'][t]}")
    print(f"seconds: hf {out['hf']['seconds']}, vllm {out['vllm']['seconds']} (incl. engine start)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
