"""Benchmark: batched vs one-prompt-at-a-time greedy generation (TransformersBackend).

    python benchmarks/bench_generation.py --model-dir results/models/smollm2 \
        --max-new-tokens 64 --batch-size 16 --json-out results/benchmarks/generation.json

Throughput = generated tokens (EOS excluded) / wall seconds. Target: batched is
at least 3x the sequential throughput. Both runs decode the same 32 chat-formatted
prompts greedily with the same loaded model; a short warm-up run precedes the timing.
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


def run(model_dir: str, max_new_tokens: int, batch_size: int, threads: int | None) -> dict:
    from teachfit.config import defaults
    from teachfit.generation.base import SamplingConfig
    from teachfit.generation.hf import TransformersBackend
    from teachfit.generation.responses import build_prompts

    backend = TransformersBackend(model_dir, batch_size=batch_size, threads=threads)
    # chat prompts exactly as rule generate_responses builds them for a default generator
    prompts = build_prompts(backend.tokenizer, PROMPTS, defaults("generators.*", model="bench"))
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    backend.generate(prompts[:2], SamplingConfig(max_new_tokens=4), desc="warm-up")

    def timed(bs: int) -> tuple[float, int, list]:
        backend.batch_size = bs
        t0 = time.perf_counter()
        out = backend.generate(prompts, sampling, desc=f"batch_size={bs}")
        secs = time.perf_counter() - t0
        return secs, sum(len(o[0].token_ids) for o in out), out

    seq_s, seq_tok, seq_out = timed(1)
    bat_s, bat_tok, bat_out = timed(batch_size)
    same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(seq_out, bat_out))
    batched, sequential = bat_tok / bat_s, seq_tok / seq_s
    ratio = batched / sequential
    return {
        "batched_tok_s": round(batched, 2),
        "sequential_tok_s": round(sequential, 2),
        "ratio": round(ratio, 3),
        "n_prompts": len(prompts),
        "target": 3.0,
        "passed": bool(ratio >= 3.0),
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "batched_seconds": round(bat_s, 2),
        "sequential_seconds": round(seq_s, 2),
        "batched_tokens": bat_tok,
        "sequential_tokens": seq_tok,
        "identical_outputs": same,
        "finished_by_eos": sum(o[0].finish_reason == "stop" for o in bat_out),
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="results/models/smollm2")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    if not (Path(args.model_dir) / "config.json").exists():
        print(f"{args.model_dir}: no config.json; materialize the model first", file=sys.stderr)
        return 2
    res = run(args.model_dir, args.max_new_tokens, args.batch_size, args.threads)
    print(
        f"generation: batched {res['batched_tok_s']:.1f} tok/s vs sequential "
        f"{res['sequential_tok_s']:.1f} tok/s = {res['ratio']:.2f}x "
        f"(target {res['target']}x, {'PASS' if res['passed'] else 'FAIL'}; "
        f"{res['n_prompts']} prompts, batch {res['batch_size']}, "
        f"{res['identical_outputs']}/{res['n_prompts']} identical outputs)"
    )
    if args.json_out:
        from teachfit.io import write_json

        write_json(res, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
