"""Benchmark: batched vs one-prompt-at-a-time greedy generation (TransformersBackend).

    python benchmarks/bench_generation.py --model-dir results/models/smollm2 \
        --max-new-tokens 64 --json-out results/benchmarks/generation.json

``--batch-size`` defaults to the workflow's (``generation.batch_size`` in the config schema, 64);
with the 32 prompts here the batched run is then one batch of 32 (``rows_per_batch``).

Throughput = generated tokens (EOS excluded) / wall seconds. Target (issue 13): batched is at
least 6x the sequential throughput. Both runs decode the same 32 chat-formatted prompts greedily
with the same loaded model; a short warm-up run precedes the timing.

The ratio is explained in measured parts (the backend's :class:`GenerationStats`):

* ``prefill``: the forward pass over each batch's prompts (the same prompt tokens either way);
* ``decode``: one forward pass per new token for every active row. Its per-token speed-up is
  ``occupancy / step_cost_ratio``: the mean number of rows a batched step advances (rows that
  hit EOS leave the batch; a batch ends with its longest row, so occupancy < batch size) over
  how much longer a step with that many rows takes than a one-row step;
* ``step_cost``: seconds of one decode step at 1, 4, 8 and 16 rows (same cache length, EOS
  ignored), i.e. what full occupancy would give.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROMPTS = [
    "Name three primary colors.",
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis in one sentence.",
    "Give me a synonym for 'happy'.",
    "List four animals that live in the ocean.",
    "Translate 'good morning' into Spanish.",
    "What is 12 multiplied by 7?",
    "Describe the color blue to someone who cannot see.",
    "Write a short motivational quote.",
    "Why is the sky blue?",
    "Suggest a name for a pet turtle.",
    "Summarize the plot of Cinderella in two sentences.",
    "What are the three states of matter?",
    "Write a Python function that returns the square of a number.",
    "Give two tips for sleeping better.",
    "What does a thermometer measure?",
    "Compose a one-line poem about the sea.",
    "Explain what a noun is.",
    "How many days are there in a leap year?",
    "Recommend a healthy breakfast.",
    "What is the opposite of 'ancient'?",
    "Write a friendly greeting for a new coworker.",
    "Name the largest planet in our solar system.",
    "How do bees make honey?",
    "Give an example of a renewable energy source.",
    "Write a riddle about time.",
    "What is the boiling point of water in Celsius?",
    "List three things you can do to reduce waste.",
    "Explain the difference between weather and climate.",
    "Write a tweet announcing a bake sale.",
    "What is the main ingredient of guacamole?",
]


def step_costs(backend, prompts: list[str], rows=(1, 4, 8, 16), steps: int = 8) -> dict[str, float]:
    """Seconds per decode step with ``r`` rows (greedy, EOS ignored, after a left-padded prefill of
    the first ``r`` prompts): the cost curve behind the decode speed-up."""
    import torch
    from transformers import DynamicCache

    from teachfit.generation.base import encode_prompts

    out = {}
    model = backend.model
    for r in rows:
        enc = encode_prompts(backend.tokenizer, prompts[:r])
        width = max(len(e) for e in enc)
        ids = torch.full((r, width), backend.pad_id or 0, dtype=torch.long)
        mask = torch.zeros((r, width), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, width - len(e):] = torch.tensor(e)
            mask[i, width - len(e):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                           use_cache=True, logits_to_keep=1).logits[:, -1]
            nxt = mask.sum(-1)
            t0 = time.perf_counter()
            for _ in range(steps):
                tok = logits.argmax(-1)
                mask = torch.cat([mask, mask.new_ones((r, 1))], dim=1)
                logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=nxt[:, None],
                               past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
                nxt = nxt + 1
            out[str(r)] = round((time.perf_counter() - t0) / steps, 4)
    return out


def run(model_dir: str, max_new_tokens: int, batch_size: int, threads: int | None) -> dict:
    from teachfit.schema import defaults
    from teachfit.generation.base import SamplingConfig
    from teachfit.generation.hf import GenerationStats, TransformersBackend
    from teachfit.generation.responses import build_prompts

    backend = TransformersBackend(model_dir, batch_size=batch_size, threads=threads)
    batch_size = min(batch_size, len(PROMPTS))  # rows of the largest batch actually run
    # chat prompts exactly as rule generate_responses builds them for a default generator
    prompts = build_prompts(backend.tokenizer, PROMPTS, defaults("generators.*", model="bench"))
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4), desc="warm-up")

    def timed(bs: int) -> tuple[float, int, list, GenerationStats]:
        backend.batch_size = bs
        backend.stats = GenerationStats()
        t0 = time.perf_counter()
        out = backend.generate(prompts, sampling, desc=f"batch_size={bs}")
        secs = time.perf_counter() - t0
        return secs, sum(len(o[0].token_ids) for o in out), out, backend.stats

    seq_s, seq_tok, seq_out, seq_st = timed(1)
    bat_s, bat_tok, bat_out, bat_st = timed(batch_size)
    curve = step_costs(backend, prompts, rows=sorted({1, 4, 8, batch_size}))
    same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(seq_out, bat_out))
    batched, sequential = bat_tok / bat_s, seq_tok / seq_s
    ratio = batched / sequential
    occupancy = bat_st.decode_rows / max(bat_st.decode_steps, 1)
    step_cost_ratio = (bat_st.decode_s / max(bat_st.decode_steps, 1)) / (seq_st.decode_s / max(seq_st.decode_steps, 1))
    full = curve[str(batch_size)] / curve["1"]
    return {
        "batched_tok_s": round(batched, 2),
        "sequential_tok_s": round(sequential, 2),
        "ratio": round(ratio, 3),
        "n_prompts": len(prompts),
        "target": 6.0,
        "passed": bool(ratio >= 6.0),
        "batch_size": batch_size,  # rows per batch (the workflow's setting, at most n_prompts)
        "max_new_tokens": max_new_tokens,
        "batched_seconds": round(bat_s, 2),
        "sequential_seconds": round(seq_s, 2),
        "batched_tokens": bat_tok,
        "sequential_tokens": seq_tok,
        "identical_outputs": same,
        "finished_by_eos": sum(o[0].finish_reason == "stop" for o in bat_out),
        "threads": threads,
        # where the time goes (GenerationStats of each run)
        "prefill_seconds": {"sequential": round(seq_st.prefill_s, 2), "batched": round(bat_st.prefill_s, 2)},
        "decode_seconds": {"sequential": round(seq_st.decode_s, 2), "batched": round(bat_st.decode_s, 2)},
        "prefill_padding_share": round(1 - bat_st.prefill_tokens / max(bat_st.prefill_positions, 1), 3),
        "decode_steps": {"sequential": seq_st.decode_steps, "batched": bat_st.decode_steps},
        "occupancy": round(occupancy, 2),
        "step_cost_ratio": round(step_cost_ratio, 3),
        "decode_speedup": round((seq_st.decode_s / max(seq_st.decode_rows, 1))
                                / (bat_st.decode_s / max(bat_st.decode_rows, 1)), 3),
        "prefill_speedup": round(seq_st.prefill_s / max(bat_st.prefill_s, 1e-9), 3),
        "step_seconds_by_rows": curve,
        "full_occupancy_decode_speedup": round(batch_size / full, 3),
    }


def explain(res: dict) -> str:
    """The ratio in measured parts (see the module docstring)."""
    p, d = res["prefill_seconds"], res["decode_seconds"]
    return (f"  = decode {res['decode_speedup']:.2f}x ({res['occupancy']:.1f} of {res['batch_size']} rows "
            f"active per step / {res['step_cost_ratio']:.2f}x longer steps; {d['sequential']:.1f} s -> "
            f"{d['batched']:.1f} s) and prefill {res['prefill_speedup']:.2f}x ({p['sequential']:.1f} s -> "
            f"{p['batched']:.1f} s)\n"
            f"  step seconds by active rows {res['step_seconds_by_rows']}: all {res['batch_size']} rows "
            f"active would make decoding {res['full_occupancy_decode_speedup']:.2f}x faster per token")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="results/models/smollm2")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="rows per batch (default: the workflow's generation.batch_size)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    if not (Path(args.model_dir) / "config.json").exists():
        print(f"{args.model_dir}: no config.json; materialize the model first", file=sys.stderr)
        return 2
    if args.batch_size is None:
        from teachfit.schema import defaults

        args.batch_size = int(defaults("generation")["batch_size"])
    res = run(args.model_dir, args.max_new_tokens, args.batch_size, args.threads)
    print(
        f"generation: batched {res['batched_tok_s']:.1f} tok/s vs sequential "
        f"{res['sequential_tok_s']:.1f} tok/s = {res['ratio']:.2f}x "
        f"(target {res['target']}x, {'PASS' if res['passed'] else 'MISS'}; "
        f"{res['n_prompts']} prompts, batch {res['batch_size']}, "
        f"{res['identical_outputs']}/{res['n_prompts']} identical outputs)"
    )
    print(explain(res))
    if args.json_out:
        from teachfit.io import write_json

        write_json(res, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
