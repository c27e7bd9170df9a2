"""How many GPUs a job asks for: a memory model, checked against the profile's GPU size.

Pure (no torch). :func:`job_gpus` is what ``rules/common.smk``'s ``gpus_*`` helpers call;
:func:`training_memory_gb` / :func:`inference_memory_gb` give the per-GPU estimate in GB
(1e9 bytes) it is based on; :func:`requests_table` lists every job of a DAG (docs/multi-gpu.md).

Training (rule ``train_sft``; weights loaded in float32, bf16 = autocast, AdamW):

* full fine-tuning: weights 4 + gradients 4 + AdamW moments 8 = 16 bytes/param, divided by N
  under FSDP full shard (ZeRO-3), plus one gathered FSDP unit (~1/16 of the float32 weights);
* LoRA: float32 frozen weights (4 bytes/param) replicated on every GPU (DDP) plus
  16 bytes/param of the trainable adapter (``LORA_FRACTION`` of the parameters); more GPUs make
  it faster, never smaller, so a LoRA job that does not fit one GPU is an error;
* activations per micro batch (``per_device_train_batch_size x max_length`` tokens):
  ``34 x hidden x layers`` bytes/token in 16-bit (Korthikanti et al. 2022, Sec. 4.1, without
  the attention-score term: SDPA/flash attention), ``5 x hidden x layers`` with gradient
  checkpointing (each layer's float32 input kept + one layer recomputed), doubled without
  bf16; plus the LM head's logits over every token (16-bit + float32 copy, ``VOCAB`` rows).
  ``hidden x layers`` is not in the config: :func:`hidden_x_layers` estimates it from the
  parameter count (a fit to Llama-2-7B, Llama-3-70B, Qwen2-1.5B, Qwen2.5-3B).

Inference: the weights in the model entry's ``dtype`` (1 byte/param for ``quantization: fp8``)
split over N GPUs (accelerate ``device_map="auto"`` or vLLM tensor parallelism), the KV cache or
in-flight hidden states of the job's tokens (``2 x hidden x layers`` values/token, no GQA
assumed), and float32 logits of one batch row per token. vLLM jobs use exactly the model's
``tensor_parallel_size`` GPUs: if the estimate does not fit there, the error says to raise it.

Every estimate is checked against ``USABLE_SHARE x gpu_mem_gb`` per GPU (CUDA context,
allocator fragmentation) and at most ``node_gpus`` GPUs (one node); no fit raises
:class:`GpuFitError` naming the job and the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

USABLE_SHARE = 0.9
VOCAB = 152_064  # Qwen2's vocabulary, the largest of the paper's students but gemma2's
LORA_FRACTION = 0.01
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
KINDS = ("train", "generate", "forward", "eval", "vllm")
GB = 1e9


# The kind of memory estimate of each rule that loads a model (rules/common.smk's gpus_* helpers
# pass the same kind); rules not listed (materialize_model, encoders on a fixed GPU) have none.
RULE_KINDS = {
    "generate_responses": "vllm", "evolve_instructions": "vllm", "evolve_autoif": "vllm",
    "answer_ifs_model": "vllm", "answer_winrate": "vllm", "judge_winrate": "vllm",
    "score_rewards": "forward", "score_losses": "forward", "gate_instructions": "forward",
    "describe_instructions": "forward", "calibrate_objecqa_judge": "forward", "score_ifs": "forward",
    "select_data": "forward", "answer_ifs_run": "generate", "train_sft": "train",
    "evaluate_model": "eval", "evaluate_checkpoints": "eval",
}


def rule_kind(rule: str) -> str | None:
    """The estimate kind of ``rule`` (``RULE_KINDS``), ``None`` for a rule without one."""
    return RULE_KINDS.get(rule)


class GpuFitError(ValueError):
    """No GPU count on one node holds the job; the message names the job and the model."""


def hidden_x_layers(params_b: float) -> float:
    """hidden_size x num_hidden_layers estimated from the parameter count (billions):
    ``131072 x (params_b / 7) ** 0.7`` (Llama-2-7B: 4096 x 32; Llama-3-70B 8192 x 80 = 655k
    vs 655k; Qwen2-1.5B 43k vs 45k; Qwen2.5-3B 74k vs 72k)."""
    return 131072.0 * (max(params_b, 1e-3) / 7.0) ** 0.7


def training_memory_gb(params_b: float, n: int, *, method: str, bf16: bool, max_length: int,
                       batch: int, gradient_checkpointing: bool, sharded: bool) -> dict[str, float]:
    """Per-GPU memory (GB) of one SFT process out of ``n``, by part (see the module doc).
    ``sharded``: weights, gradients and optimizer states are split over ``n`` (FSDP full shard)."""
    p = params_b * 1e9
    if method == "full":
        states = {"weights": 4 * p, "gradients": 4 * p, "optimizer": 8 * p}
        div = n if sharded else 1
        parts = {k: v / div for k, v in states.items()}
        parts["fsdp_unit"] = 4 * p / 16 if sharded and n > 1 else 0.0
    elif method == "lora":
        parts = {"weights": 4 * p, "gradients": 4 * p * LORA_FRACTION,
                 "optimizer": 8 * p * LORA_FRACTION, "fsdp_unit": 0.0}
    else:
        raise ValueError(f"method {method!r}: expected full or lora")
    tokens = batch * max_length
    per_token = (5 if gradient_checkpointing else 34) * hidden_x_layers(params_b)
    parts["activations"] = tokens * per_token * (1 if bf16 else 2)
    parts["logits"] = tokens * VOCAB * (6 if bf16 else 8)
    return {k: v / GB for k, v in parts.items()}


def inference_memory_gb(params_b: float, n: int, *, weight_bytes: float, tokens: int,
                        rows: int = 1) -> dict[str, float]:
    """Per-GPU memory (GB) of a forward-only / generation job on ``n`` GPUs: weights
    (``weight_bytes`` per param) and KV cache of ``tokens`` tokens (``2 x hidden x layers``
    values of 2 bytes, or 4 for float32 weights) split over ``n``; float32 logits of ``rows``
    sequences' last position... of every token when ``rows`` = ``tokens`` (scoring)."""
    p = params_b * 1e9
    act_bytes = 4 if weight_bytes >= 4 else 2
    return {"weights": p * weight_bytes / n / GB,
            "kv_cache": tokens * 2 * hidden_x_layers(params_b) * act_bytes / n / GB,
            "logits": rows * VOCAB * 4 / GB}


def _weight_bytes(entry: Mapping[str, Any]) -> float:
    if entry.get("quantization", "none") == "fp8":
        return 1.0
    return float(DTYPE_BYTES[entry.get("dtype", "float32")])


def sft_strategy(sft: Mapping[str, Any], n: int) -> str:
    """The distributed strategy of an SFT job on ``n`` processes: ``single`` (n = 1), else
    ``sft.distributed.strategy`` with ``auto`` = FSDP for full fine-tuning, DDP for LoRA."""
    if n <= 1:
        return "single"
    strategy = sft.get("distributed", {}).get("strategy", "auto")
    if strategy == "auto":
        return "fsdp" if sft["method"] == "full" else "ddp"
    return strategy


def train_estimate(sft: Mapping[str, Any], params_b: float, n: int) -> dict[str, float]:
    """:func:`training_memory_gb` of the ``sft`` section on ``n`` GPUs."""
    return training_memory_gb(
        params_b, n, method=sft["method"], bf16=bool(sft["bf16"]), max_length=int(sft["max_length"]),
        batch=int(sft["per_device_train_batch_size"]),
        gradient_checkpointing=bool(sft["gradient_checkpointing"]), sharded=sft_strategy(sft, n) == "fsdp")


def inference_tokens(config: Mapping[str, Any], kind: str) -> tuple[int, int]:
    """(tokens in flight, rows whose logits are held) of an inference job kind:
    ``forward`` (loss / reward / judge scoring): ``scoring.batch_tokens`` or the longest window,
    logits of every token; ``generate`` (transformers generation): ``generation.batch_size`` rows
    of 2,048 tokens; ``eval`` (lm-eval): ``eval.batch_size`` rows of ``eval.max_gen_toks`` +
    2,048 prompt tokens; ``vllm``: one sequence of ``max_model_len`` (8,192 when unset)."""
    if kind == "forward":
        sc = config.get("scoring", {})
        t = max(int(sc.get("batch_tokens", 8192)), *[int(v) for v in sc.get("max_length", {}).values()], 1)
        return t, t
    if kind == "generate":
        b = int(config.get("generation", {}).get("batch_size", 64))
        return b * 2048, b
    if kind == "eval":
        ev = config.get("eval", {})
        b = int(ev.get("batch_size", 8))
        return b * (int(ev.get("max_gen_toks", 256)) + 2048), b
    raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")


def estimate(config: Mapping[str, Any], alias: str, kind: str, n: int) -> dict[str, float]:
    """Per-GPU memory parts (GB) of a ``kind`` job on model ``alias`` with ``n`` GPUs."""
    entry = config["models"][alias]
    params_b = float(entry.get("params_b", 1.0))
    if kind == "train":
        return train_estimate(config["sft"], params_b, n)
    if kind == "vllm":
        tokens = int(entry.get("max_model_len") or 8192)
        return inference_memory_gb(params_b, n, weight_bytes=_weight_bytes(entry), tokens=tokens)
    tokens, rows = inference_tokens(config, kind)
    return inference_memory_gb(params_b, n, weight_bytes=_weight_bytes(entry), tokens=tokens, rows=rows)


def job_gpus(config: Mapping[str, Any], alias: str, kind: str, job: str = "") -> int:
    """GPUs a job of ``kind`` (one of ``KINDS``) on model ``alias`` asks for: 0 for an API model;
    for a vLLM model with kind ``vllm`` exactly its ``tensor_parallel_size``; otherwise the
    smallest N <= ``node_gpus`` whose per-GPU estimate fits ``USABLE_SHARE x gpu_mem_gb``
    (never below the model's ``tensor_parallel_size`` for ``eval``, which may run vLLM; for
    ``train`` under FSDP a divisor of ``sft.gradient_accumulation_steps``, so the global batch is
    kept; under DDP (LoRA) 1).

    ``config`` is the validated workflow config (``gpu_mem_gb``, ``node_gpus``, ``models``,
    ``sft``, ``scoring``, ``generation``, ``eval``). Raises :class:`GpuFitError` naming ``job``
    and ``alias`` when nothing fits (LoRA that does not fit one GPU, a vLLM model whose
    ``tensor_parallel_size`` is too small, a model larger than a node)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    entry = config["models"][alias]
    if entry.get("source") == "api":
        return 0
    budget = USABLE_SHARE * float(config.get("gpu_mem_gb", 80))
    node = int(config.get("node_gpus", 8))
    tp = int(entry.get("tensor_parallel_size", 1))
    if kind == "vllm" and entry.get("backend") != "vllm":
        kind = "generate"
    what = f"job {job or kind} on model {alias} ({entry.get('params_b', 1.0)}B params)"
    if kind == "vllm":
        need = sum(estimate(config, alias, "vllm", tp).values())
        if need > budget:
            fit = next((n for n in range(tp, node + 1) if sum(estimate(config, alias, "vllm", n).values()) <= budget),
                       None)
            hint = f"set tensor_parallel_size >= {fit}" if fit else f"it does not fit {node} GPUs"
            raise GpuFitError(f"{what}: needs {need:.0f} GB per GPU at tensor_parallel_size {tp}, over "
                              f"{budget:.0f} GB (gpu_mem_gb {config.get('gpu_mem_gb', 80)} x {USABLE_SHARE}); {hint}")
        return tp
    if kind == "train" and sft_strategy(config["sft"], 2) != "fsdp":
        candidates = [1]  # DDP replicates the model: more GPUs never make a process smaller
    elif kind == "train":
        # the global batch (per_device_train_batch_size x gradient_accumulation_steps) is kept:
        # N processes accumulate gradient_accumulation_steps / N micro batches each
        accum = int(config["sft"]["gradient_accumulation_steps"])
        candidates = [n for n in range(1, node + 1) if accum % n == 0]
    else:
        candidates = list(range(max(1, tp if kind == "eval" else 1), node + 1))
    for n in candidates:
        if sum(estimate(config, alias, kind, n).values()) <= budget:
            return n
    last = estimate(config, alias, kind, candidates[-1])
    parts = ", ".join(f"{k} {v:.1f}" for k, v in last.items())
    raise GpuFitError(f"{what}: no GPU count <= {candidates[-1]} fits {budget:.0f} GB per GPU "
                      f"(gpu_mem_gb {config.get('gpu_mem_gb', 80)} x {USABLE_SHARE}); at {candidates[-1]} GPUs: "
                      f"{parts} GB per GPU")


def requests_table(config: Mapping[str, Any], jobs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """One row per distinct (rule, model, kind): rule, model, params_b, method (SFT) or dtype,
    kind, GPUs and the per-GPU estimate in GB at that count."""
    rows, seen = [], set()
    for rule, alias, kind in jobs:
        if (rule, alias, kind) in seen:
            continue
        seen.add((rule, alias, kind))
        entry = config["models"][alias]
        n = job_gpus(config, alias, kind, rule)
        gb = sum(estimate(config, alias, kind, max(n, 1)).values()) if n else 0.0
        rows.append({"rule": rule, "model": alias, "params_b": entry.get("params_b", 1.0),
                     "method": config["sft"]["method"] if kind == "train" else
                     "api" if entry.get("source") == "api" else entry.get("dtype", "float32"),
                     "kind": kind, "gpus": n, "gb_per_gpu": round(gb, 1),
                     "strategy": sft_strategy(config["sft"], n) if kind == "train" else
                     ("tensor parallel" if kind == "vllm" and entry.get("backend") == "vllm" and n > 1
                      else "device_map" if n > 1 else "single")})
    return sorted(rows, key=lambda r: (r["rule"], r["model"]))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`requests_table` as a Markdown table."""
    head = ("| rule | model | params (B) | method / dtype | kind | GB per GPU | GPUs | engine |\n"
            "|---|---|---|---|---|---|---|---|")
    body = [f"| {r['rule']} | {r['model']} | {r['params_b']} | {r['method']} | {r['kind']} | {r['gb_per_gpu']} | "
            f"{r['gpus']} | {r['strategy']} |" for r in rows]
    return "\n".join([head, *body])
