"""The paper-shaped rehearsal (``make rehearsal``, docs/rehearsal.md): ``config/paper.yaml`` run
end to end on one CPU node, with only sizes and sources changed.

Three parts, all used by ``tests/slurm/rehearsal.py`` (the runner of ``make rehearsal``):

* :func:`seed_tiny_hub` writes a Hugging Face hub cache (``$HF_HOME/hub``, the layout
  ``huggingface_hub`` reads with ``HF_HUB_OFFLINE=1``) holding, under each hub id that the run
  uses, a tiny random model of that checkpoint's architecture family (:data:`HUB_FAMILIES`,
  :func:`teachfit.models.build_random_model`): Qwen2, Llama, Gemma2, Phi3, Mistral, MPT,
  Falcon, GPT-NeoX, BERT (bert-base-uncased with its pre-training heads, as published) and a
  custom-code reward model laid out as ArmoRM (:data:`TINY_GATED_REWARD_CODE`). The win-rate
  benchmarks' hub files are written there too, small. So ``materialize_model`` and
  ``download_winrate_data`` run their hub code paths, offline.
* :func:`rehearsal_config` turns ``paper.yaml`` into the rehearsal's config: the same file with
  the changes listed in its returned :class:`Change` records (sizes, list cuts to one item per
  distinct code path, local seed files, the API models pointed at a local ``vllm serve``, local
  lm-eval tasks), nothing else.
* :func:`write_seed_files` writes the seed sets (``seedsets.<name>.path``) that replace the hub
  data sets, from the repository's own seed files.

Nothing here is imported by the workflow's rules.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachfit.io import read_records, write_json, write_jsonl
from teachfit.models import ModelSourceError, ModelSpec, build_random_model, train_tiny_tokenizer

# hub id (regex) -> architecture family of the published checkpoint (its config.json model_type)
HUB_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"^Qwen/Qwen2(\.5)?-", "qwen2"),
    (r"^(meta-llama/|huggyllama/|lmsys/vicuna|nvidia/Llama-3\.1-Minitron)", "llama"),
    (r"^google/gemma-2-", "gemma2"),
    (r"^microsoft/Phi-3-(mini|medium)-", "phi3"),
    (r"^mistralai/Mistral-", "mistral"),
    (r"^mosaicml/mpt-", "mpt"),
    (r"^tiiuae/falcon-", "falcon"),
    (r"^databricks/dolly-v2-", "gpt_neox"),
    (r"^google-bert/bert-", "bert_pretraining"),
    (r"^sentence-transformers/", "bert"),
    (r"^RLHFlow/ArmoRM-", "custom_reward"),
)
# Sizes of every tiny model: head_dim 64 (a head size vLLM's CPU attention supports), a context as
# long as paper.yaml's scoring windows (8,192 tokens).
TINY_SIZE = {"hidden_size": 128, "num_heads": 2, "num_layers": 2, "intermediate_size": 256,
             "max_position_embeddings": 8192, "vocab_size": 512}
# A fixed fake commit per cache entry (revision "main" resolves to it through refs/main).
CACHE_COMMIT = "0" * 39 + "1"

# Chat templates of the instruct families, shaped like the published ones (special tokens are
# plain text to the tiny tokenizer). Falcon-instruct, MPT-instruct, Dolly and Vicuna publish none:
# materialize gives them Teachfit's default, as on a cluster.
CHAT_TEMPLATES = {
    "qwen2": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "llama": ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
              "{{ m['content'] }}<|eot_id|>{% endfor %}"
              "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "gemma2": ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
               "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
               "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
    "phi3": ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
}
TEMPLATE_HUB_IDS = r"-(Instruct|it|instruct-\d+k?)($|-)|-Instruct-|-\d+k-instruct$"

# The custom-code reward stand-in (ArmoRM-Llama3-8B-v0.1's layout): a llama config whose
# auto_map points AutoModelForSequenceClassification at a class in a .py file beside
# config.json, a multi-objective regression layer, a gating layer, and an output whose ``.score``
# is the gated sum. tests/test_remote_code.py tests Teachfit against it.
TINY_GATED_REWARD_MODULE = "modeling_tiny_gated"
TINY_GATED_REWARD_CODE = '''
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class TinyGatedRewardOutput(ModelOutput):
    score: torch.FloatTensor | None = None
    rewards: torch.FloatTensor | None = None
    gating_output: torch.FloatTensor | None = None


class TinyGatedReward(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, config.num_objectives, bias=False)
        self.gating = nn.Sequential(nn.Linear(config.hidden_size, config.num_objectives), nn.Softmax(dim=-1))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids).last_hidden_state
        # as ArmoRM: the token before the first pad id (none found: the last position)
        last = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
        h = hidden[torch.arange(input_ids.shape[0], device=hidden.device), last]
        rewards = self.regression_layer(h)
        gating = self.gating(h)
        return TinyGatedRewardOutput(score=(rewards * gating).sum(-1, keepdim=True), rewards=rewards,
                                     gating_output=gating)
'''


def build_custom_reward(out_dir: Path, seed: int = 0, hidden: int = 32, heads: int = 4,
                        objectives: int = 3) -> Path:
    """A custom-code reward checkpoint in ``out_dir`` (weights, tiny tokenizer, the modelling
    code of :data:`TINY_GATED_REWARD_CODE`, ``auto_map``); returns ``out_dir``."""
    import torch
    from transformers import LlamaConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    code_dir = out_dir / "_code"
    code_dir.mkdir(exist_ok=True)
    code = code_dir / f"{TINY_GATED_REWARD_MODULE}.py"
    code.write_text(TINY_GATED_REWARD_CODE)
    spec = importlib.util.spec_from_file_location(TINY_GATED_REWARD_MODULE, code)
    module = importlib.util.module_from_spec(spec)
    sys.modules[TINY_GATED_REWARD_MODULE] = module
    try:
        spec.loader.exec_module(module)
        tok = train_tiny_tokenizer(out_dir)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=heads,
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, initializer_range=0.3)
        cfg.num_objectives = objectives
        torch.manual_seed(seed)
        model = module.TinyGatedReward(cfg)
        module.TinyGatedReward.register_for_auto_class("AutoModelForSequenceClassification")
        model.save_pretrained(out_dir)  # copies the module file beside config.json
    finally:
        del sys.modules[TINY_GATED_REWARD_MODULE]
    code.unlink()
    code_dir.rmdir()
    return out_dir


def hub_family(hf_id: str) -> str:
    """The architecture family of a hub id (:data:`HUB_FAMILIES`). Raises :class:`ModelSourceError`
    for a hub id the rehearsal has no stand-in for."""
    for pattern, family in HUB_FAMILIES:
        if re.search(pattern, hf_id):
            return family
    raise ModelSourceError(f"rehearsal: no tiny stand-in for hub model {hf_id!r}; "
                           "add its family to teachfit.rehearsal.HUB_FAMILIES")


def cache_snapshot(hf_home: Path, repo: str, repo_type: str = "model", revision: str = "main") -> Path:
    """The snapshot folder of ``repo`` in the hub cache under ``hf_home`` (created, with
    ``refs/<revision>`` pointing at :data:`CACHE_COMMIT`)."""
    kind = {"model": "models", "dataset": "datasets", "space": "spaces"}[repo_type]
    root = Path(hf_home) / "hub" / f"{kind}--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(CACHE_COMMIT)
    snap = root / "snapshots" / CACHE_COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def build_tiny_checkpoint(hf_id: str, out_dir: Path, seed: int = 0) -> str:
    """A tiny random checkpoint of ``hf_id``'s family in ``out_dir``; returns the family."""
    from transformers import AutoTokenizer

    family = hub_family(hf_id)
    out_dir = Path(out_dir)
    if family == "custom_reward":
        build_custom_reward(out_dir, seed=seed, hidden=TINY_SIZE["hidden_size"], heads=TINY_SIZE["num_heads"])
        return family
    if family in ("bert", "bert_pretraining"):
        # all-MiniLM publishes a BertModel; bert-base-uncased BertForPreTraining weights, whose
        # heads an encoder load drops
        import torch
        from transformers import BertConfig, BertForPreTraining, BertModel

        torch.manual_seed(seed)
        tok = train_tiny_tokenizer(out_dir, vocab_size=TINY_SIZE["vocab_size"])
        cfg = BertConfig(vocab_size=len(tok), hidden_size=TINY_SIZE["hidden_size"],
                         num_attention_heads=TINY_SIZE["num_heads"], num_hidden_layers=TINY_SIZE["num_layers"],
                         intermediate_size=TINY_SIZE["intermediate_size"], pad_token_id=tok.pad_token_id)
        (BertModel if family == "bert" else BertForPreTraining)(cfg).save_pretrained(out_dir)
        return family
    spec = ModelSpec.from_config(hf_id.replace("/", "_"), {"source": "random", "arch": family, "size": TINY_SIZE})
    build_random_model(spec, out_dir, seed=seed)
    if family in CHAT_TEMPLATES and re.search(TEMPLATE_HUB_IDS, hf_id):
        tok = AutoTokenizer.from_pretrained(out_dir)
        tok.chat_template = CHAT_TEMPLATES[family]
        tok.save_pretrained(out_dir)
    return family


def used_models(config: dict[str, Any]) -> list[str]:
    """Aliases of ``config["models"]`` the config uses: named outside ``models`` and
    ``generators``, or the model of a generator named there (sorted)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            names.add(node)

    walk({k: v for k, v in config.items() if k not in ("models", "generators")})
    generators = config.get("generators") or {}
    for name in sorted(names & set(generators)):
        walk(generators[name])
        for member in (generators[name].get("per_instruction") or {}).get("generators", []):
            walk(generators.get(member, {}))
    return sorted(a for a in config.get("models", {}) if a in names)


def seed_tiny_hub(config: dict[str, Any], hf_home: Path, benchmark_rows: int = 6,
                  instructions: list[str] | None = None, skip_existing: bool = False) -> dict[str, Any]:
    """Write the rehearsal's hub cache under ``hf_home``: a tiny checkpoint for every ``source:
    hub`` model of ``config`` that the config uses, and a small file for every win-rate benchmark
    hub source. Returns ``{"models": {hf_id: family}, "files": [repo/file, ...]}``."""
    hf_home = Path(hf_home)
    done: dict[str, Any] = {"models": {}, "files": []}
    for alias in used_models(config):
        entry = config["models"][alias]
        if entry.get("source") != "hub" or entry["hf_id"] in done["models"]:
            continue
        snap = cache_snapshot(hf_home, entry["hf_id"], revision=entry.get("revision") or "main")
        if skip_existing and (snap / "config.json").exists():
            done["models"][entry["hf_id"]] = hub_family(entry["hf_id"])
            continue
        done["models"][entry["hf_id"]] = build_tiny_checkpoint(entry["hf_id"], snap)
    texts = instructions or [f"Question {i}: explain step {i} of the method." for i in range(benchmark_rows)]
    texts = texts[:benchmark_rows]
    benches = (config.get("teacher", {}).get("winrate", {}).get("benchmarks") or {})
    for bench in benches.values():
        if not isinstance(bench, dict) or bench.get("activate") is False:
            continue
        for part in ("instructions", "reference"):
            hub = (bench.get(part) or {}).get("hub")
            if not hub:
                continue
            snap = cache_snapshot(hf_home, hub["repo"], hub.get("repo_type", "dataset"), hub.get("revision") or "main")
            path = snap / hub["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            ref = bench.get("reference_name", "reference")
            if hub["format"] == "alpaca_eval":
                write_json([{"dataset": "helpful_base", "instruction": t, "output": f"Reference answer {i}.",
                             "generator": ref} for i, t in enumerate(texts)], path)
            elif hub["format"] == "arena_hard_questions":
                write_jsonl([{"question_id": f"q{i}", "category": "arena-hard-v0.1", "cluster": "rehearsal",
                              "turns": [{"content": t}]} for i, t in enumerate(texts)], path)
            elif hub["format"] == "arena_hard_answers":
                write_jsonl([{"question_id": f"q{i}", "answer_id": f"a{i}", "model_id": ref, "tstamp": 0.0,
                              "choices": [{"index": 0, "turns": [{"content": f"Reference answer {i}.",
                                                                  "token_len": 3}]}]}
                             for i in range(len(texts))], path)
            done["files"].append(f"{hub['repo']}/{hub['file']}")
        if bench.get("length_controlled") == "alpaca_eval":
            done["files"].append(write_alpaca_eval_gamed(hf_home, len(texts)))
    return done


def write_alpaca_eval_gamed(hf_home: Path, n_instructions: int) -> str:
    """alpaca-eval's length-controlled GLM reads ``df_gamed.csv`` from the hub dataset
    tatsu-lab/alpaca_eval at scoring time (``alpaca_eval.metrics.glm_winrate._get_featurized_data``:
    each instruction's difficulty and two gamed baselines' annotations). A small one for
    ``n_instructions`` instructions, in that file's columns; returns its repo path."""
    snap = cache_snapshot(hf_home, "tatsu-lab/alpaca_eval", "dataset")
    lines = ["model,index,instruction_difficulty,preference,std_delta_len,not_gamed_baseline"]
    for model, pref, delta in (("gamed_verbose", 0.7, 1.0), ("gamed_concise", 0.3, -1.0)):
        for i in range(n_instructions):
            difficulty = round((i - n_instructions / 2) / n_instructions, 4)
            lines.append(f"{model},{i},{difficulty},{pref},{delta},False")
    (snap / "df_gamed.csv").write_text("\n".join(lines) + "\n")
    return "tatsu-lab/alpaca_eval/df_gamed.csv"


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class Change:
    """One difference between paper.yaml and the rehearsal's config: the key path, the old and
    new values, and the kind of change (size, list, source, speed, random weights)."""
    key: str
    old: Any
    new: Any
    kind: str


# One item per distinct code path (docs/rehearsal.md lists why each was kept).
LIST_CUTS: dict[str, list[str]] = {
    # vLLM greedy (Phi3; Qwen2 generates as an evolver), the OpenAI-API generator, n > 1 best
    # and worst (Llama)
    "teacher.generators": ["g_phi3_mini", "g_gpt4", "g_llama31_70b_best4", "g_llama31_70b_worst4"],
    # Gemma2 (soft-capped attention) as the student
    "teacher.bases": ["gemma2_2b_base"],
    # instruction + input field (alpaca); a small and a large evolver of two families
    "evolver.seedsets": ["alpaca"],
    "evolver.evolvers": ["llama31_8b", "qwen2_72b"],
    "evolver.bases": ["mistral7b_base"],
    # MPT (ALiBi) base, Falcon instruct (no chat template), GPT-NeoX (Dolly)
    "ifs.models": ["mpt7b_base", "falcon7b_instruct", "dolly_v2_7b"],
}
# Sizes: what paper.yaml runs at full size, cut to what 2 CPU cores finish.
SIZES: dict[str, Any] = {
    "generators.*.max_new_tokens": 24,
    "evolver.max_new_tokens": 48,
    "evolver.scenarios.autoif.n_instructions": 3,
    "evolver.scenarios.autoif.queries_per_instruction": 2,
    "teacher.winrate.benchmarks.alpaca_eval2.max_new_tokens": 24,
    "teacher.winrate.benchmarks.arena_hard.max_new_tokens": 24,
    "teacher.winrate.benchmarks.arena_hard.judge_max_new_tokens": 48,
    "ifs.objecqa.limit": 4,
    "ifs.objecqa.max_new_tokens": 24,
    "ifs.prompts.limit": 4,
    "ifs.prompts.max_new_tokens": 24,
    "sft.save_steps": 1,
    "eval.limit": 4,
    "eval.max_gen_toks": 16,
}
# Random weights write no instructions: with the gate as paper.yaml runs it, every evolution is
# dropped and round 2 has nothing to evolve. The gate keeps its judge-backed check and asks the
# judge (the calibrated yes/no path runs), with a threshold that keeps what the judge is asked about.
# The random reward head scores with either sign (a generator's mean came out at -0.26), and CAR
# refuses a mean reward + teacher.car.reward_offset <= 0 (its length penalty would invert), so the
# offset lifts every random mean above 0; CAR's code path is the same.
RANDOM_WEIGHTS: dict[str, Any] = {
    "evolver.gate.checks": ["not_instruction"],
    "evolver.gate.threshold": 0.0,
    "teacher.car.reward_offset": 100.0,
}
SEED_LIMIT = 8
TINY_PARAMS_B = 0.001  # about the tiny models' size (0.4-0.5 M parameters, rounded up)
# lm-eval: the hub tasks become the repository's local tasks (the default config's)
LOCAL_TASKS = ["tf_ifeval", "tf_arith"]
LOCAL_METRICS = {"tf_ifeval": "prompt_level_loose_acc,none", "tf_arith": "exact_match,flexible-extract"}


def _get(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node[part]
    return node


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def rehearsal_config(paper: dict[str, Any], *, api_base: str, api_model: str, api_key_env: str,
                     seed_dir: str) -> tuple[dict[str, Any], list[Change]]:
    """``paper`` (config/paper.yaml as read) with the rehearsal's changes, and the list of them.

    Sizes (:data:`SIZES`, seed sets cut to :data:`SEED_LIMIT` records), lists (:data:`LIST_CUTS`),
    sources (hub seed sets -> ``<seed_dir>/<name>.jsonl``; the API models -> ``api_base`` serving
    ``api_model``; lm-eval's hub tasks -> :data:`LOCAL_TASKS`) and speed (``enforce_eager`` for
    vLLM models: no 2-3 minute CPU compile per engine start). Every other setting is paper.yaml's.
    Raises ``KeyError`` when paper.yaml lacks a key the rehearsal changes."""
    cfg = copy.deepcopy(paper)
    changes: list[Change] = []

    def change(key: str, new: Any, kind: str) -> None:
        try:
            old = _get(cfg, key)
        except KeyError:
            old = None
        if old != new:
            _set(cfg, key, new)
            changes.append(Change(key, old, new, kind))

    for key, items in LIST_CUTS.items():
        # teacher.generators may take a generator paper.yaml defines but does not list (its
        # n > 1 best / worst generators), so that those settings run too
        known = set(_get(cfg, key)) | (set(cfg["generators"]) if key == "teacher.generators" else set())
        missing = sorted(set(items) - known)
        if missing:
            raise KeyError(f"rehearsal: {key} of paper.yaml has no {missing}")
        change(key, items, "list")
    for key, value in SIZES.items():
        if key.startswith("generators.*."):
            field = key.rsplit(".", 1)[1]
            for name, gen in cfg["generators"].items():
                if field in gen:
                    change(f"generators.{name}.{field}", value, "size")
        else:
            _get(cfg, key.rsplit(".", 1)[0])  # the parent must exist in paper.yaml
            change(key, value, "size")
    for key, value in RANDOM_WEIGHTS.items():
        change(key, value, "random weights")
    for name, entry in cfg["seedsets"].items():
        if "hf_dataset" in entry:
            new = {k: v for k, v in entry.items() if k in ("instruction_field", "input_field")}
            new.update(path=f"{seed_dir}/{name}.jsonl", limit=SEED_LIMIT)
            changes.append(Change(f"seedsets.{name}", entry, new, "source"))
            cfg["seedsets"][name] = new
    for alias, entry in cfg["models"].items():
        if entry.get("source") == "api":
            change(f"models.{alias}.api_base", api_base, "source")
            change(f"models.{alias}.api_model", api_model, "source")
            change(f"models.{alias}.api_key_env", api_key_env, "source")
        else:
            if entry.get("backend") == "vllm":
                change(f"models.{alias}.enforce_eager", True, "speed")
            # a tiny model fits one (CPU) device: GPU counts come from these two sizes
            if "params_b" in entry:
                change(f"models.{alias}.params_b", TINY_PARAMS_B, "size")
            if "tensor_parallel_size" in entry:
                change(f"models.{alias}.tensor_parallel_size", 1, "size")
    change("eval.tasks", LOCAL_TASKS, "source")
    change("performance.metrics", LOCAL_METRICS, "source")
    return cfg, changes


def write_seed_files(config: dict[str, Any], root: Path, seed_dir: str, sources: list[Path]) -> dict[str, int]:
    """Write ``<root>/<seed_dir>/<name>.jsonl`` for every seed set of ``config`` whose path is in
    ``seed_dir`` (relative to the workflow folder ``root``),
    records in the set's own fields (``instruction_field``, ``input_field``) taken in turn from
    the records of ``sources`` (JSONL seed files with an ``instruction`` field). Returns
    ``{name: records}``."""
    pool = [r for src in sources for r in read_records(src)]
    if not pool:
        raise ValueError(f"rehearsal: no seed records in {[str(s) for s in sources]}")
    out: dict[str, int] = {}
    for k, (name, entry) in enumerate(sorted(config["seedsets"].items())):
        path = Path(entry.get("path", ""))
        if path.parent != Path(seed_dir):
            continue
        n = SEED_LIMIT * 2
        rows = []
        for i in range(n):
            rec = pool[(k * n + i) % len(pool)]
            row = {entry.get("instruction_field", "instruction"): rec["instruction"]}
            if entry.get("input_field") and rec.get("input"):
                row[entry["input_field"]] = rec["input"]
            rows.append(row)
        write_jsonl(rows, Path(root) / path)
        out[name] = len(rows)
    return out


def changes_table(changes: list[Change]) -> str:
    """The changes as a Markdown table (key, paper.yaml, rehearsal, kind)."""
    def show(v: Any) -> str:
        s = json.dumps(v, sort_keys=True)
        return s if len(s) <= 90 else s[:87] + "..."
    lines = ["| key | paper.yaml | rehearsal | kind |", "|---|---|---|---|"]
    lines += [f"| `{c.key}` | `{show(c.old)}` | `{show(c.new)}` | {c.kind} |" for c in changes]
    return "\n".join(lines) + "\n"
