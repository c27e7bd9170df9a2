"""Prompt formatting (teachfit.prompts) against the tiny model's tokenizer."""

from __future__ import annotations

import pytest

from teachfit.models import DEFAULT_CHAT_TEMPLATE, load_tokenizer, materialize
from teachfit.prompts import FEWSHOT_STOPS, format_prompt, stop_strings

PAIRS = [("Add 1 and 2.", "3"), ("Name a color.", "Blue")]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("prompts") / "tiny"
    manifest = materialize("tiny", {"source": "random", "arch": "llama"}, out)
    assert manifest["chat_template"] == "teachfit-default"
    return load_tokenizer(out)


def test_chat_uses_the_chat_template(tok):
    text = format_prompt(tok, "Explain gravity.", fmt="chat")
    expected = tok.apply_chat_template(
        [{"role": "user", "content": "Explain gravity."}], add_generation_prompt=True, tokenize=False
    )
    assert text == expected
    assert text.removeprefix(tok.bos_token) == "### Instruction:\nExplain gravity.\n\n### Response:\n"


def test_chat_fewshot_pairs_are_earlier_turns_and_system_first(tok):
    text = format_prompt(tok, "Explain gravity.", fmt="chat", system="Be brief.", fewshot=PAIRS)
    assert text.removeprefix(tok.bos_token).startswith("Be brief.\n\n### Instruction:\nAdd 1 and 2.")
    order = [text.index(s) for s in ("Add 1 and 2.", "\n3", "Name a color.", "Blue", "Explain gravity.")]
    assert order == sorted(order)
    assert text.endswith("### Response:\n")


def test_fewshot_format_matches_default_chat_template_markers(tok):
    """The plain-text few-shot prompt is the default chat template's rendering without BOS/EOS
    (the tokenizer adds BOS when it encodes plain text)."""
    plain = format_prompt(None, "Explain gravity.", fmt="fewshot", system="Be brief.", fewshot=PAIRS)
    chat = format_prompt(tok, "Explain gravity.", fmt="chat", system="Be brief.", fewshot=PAIRS)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    assert chat.removeprefix(tok.bos_token).replace(tok.eos_token, "") == plain
    assert plain == (
        "Be brief.\n\n"
        "### Instruction:\nAdd 1 and 2.\n\n### Response:\n3\n\n"
        "### Instruction:\nName a color.\n\n### Response:\nBlue\n\n"
        "### Instruction:\nExplain gravity.\n\n### Response:\n"
    )


def test_fewshot_without_shots_or_system():
    assert format_prompt(None, "Hi", fmt="fewshot") == "### Instruction:\nHi\n\n### Response:\n"


def test_raw_and_raw_template():
    assert format_prompt(None, "Hello {there}", fmt="raw") == "Hello {there}"
    assert format_prompt(None, "Hi", fmt="raw", raw_template="Q: {instruction}\nA:") == "Q: Hi\nA:"
    with pytest.raises(ValueError, match="instruction"):
        format_prompt(None, "Hi", fmt="raw", raw_template="no placeholder")
    with pytest.raises(ValueError, match="raw"):
        format_prompt(None, "Hi", fmt="raw", system="sys")


def test_unknown_format_names_allowed_values(tok):
    with pytest.raises(ValueError, match="chat, raw, fewshot"):
        format_prompt(tok, "Hi", fmt="alpaca")
    with pytest.raises(ValueError, match="chat, raw, fewshot"):
        stop_strings("alpaca")


def test_chat_without_template_is_a_clear_error(tok):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="chat template"):
        format_prompt(NoTemplate(), "Hi", fmt="chat")


def test_bad_fewshot_pair():
    with pytest.raises(ValueError, match=r"fewshot\[0\]"):
        format_prompt(None, "Hi", fmt="fewshot", fewshot=[("only question",)])


def test_generator_prompts_as_generate_responses_builds_them(tok):
    """What rule generate_responses sends a local engine (``build_prompts``, which replaced the
    test-only ``format_prompts``): one prompt per instruction in the generator's format; the
    few-shot format carries the project's demonstrations and its stop strings."""
    from teachfit.schema import defaults
    from teachfit.generation.responses import FEWSHOT_EXAMPLES, build_prompts, sampling_from_generator

    chat = defaults("generators.*", model="tiny", system="Be brief.")
    assert build_prompts(tok, ["a", "b"], chat) == [
        format_prompt(tok, x, fmt="chat", system="Be brief.") for x in ("a", "b")
    ]
    fewshot = defaults("generators.*", model="tiny", prompt_format="fewshot", stop=["END"])
    assert build_prompts(tok, ["a"], fewshot) == [
        format_prompt(tok, "a", fmt="fewshot", fewshot=FEWSHOT_EXAMPLES)
    ]
    assert sampling_from_generator(fewshot).stop == ["END", *FEWSHOT_STOPS]
    assert sampling_from_generator(chat).stop == []
    raw = defaults("generators.*", model="tiny", prompt_format="raw")
    assert build_prompts(None, ["x {y}"], raw) == ["x {y}"]


def test_stop_strings():
    assert stop_strings("fewshot") == ["\n### Instruction", "### Instruction:"] == list(FEWSHOT_STOPS)
    assert stop_strings("chat") == []
    assert stop_strings("raw", extra=["\n\n", "\n\n"]) == ["\n\n"]
    assert stop_strings("fewshot", extra=["### Instruction:", "END"]) == [*FEWSHOT_STOPS, "END"]
    with pytest.raises(ValueError, match="non-empty"):
        stop_strings("chat", extra=[""])
