"""The validity gate on evolved instructions: one gate, one counted drop reason per failure kind.

Every evolution reply passes this gate before the teacher answers it (rule
``gate_instructions``), and every answered instruction passes its response checks before the
equal-size sets are built (rule ``gate_responses``). A reply gets at most one reason: the
first failing check in :data:`INSTRUCTION_REASONS` order, then :data:`RESPONSE_REASONS`.

Instruction checks (Teachfit issue 15; WizardLM's elimination rules, Xu et al. 2023,
arXiv 2304.12244, §3 "Elimination Evolving" -- paper text, the reference repository
HypherX/Evolution-Analysis implements none of them, see ``Evol_Instruct/evol_instruct.py:61-68``):

``empty``
    blank reply, a bare marker (``#``), or, after the evolving prompt's section labels are
    stripped, nothing but punctuation and stop words (WizardLM rule 3 applied to the
    instruction).
``unparseable``
    Auto Evol-Instruct only: the reply has no ``#Finally Rewritten Instruction#`` section; the
    reference drops these (``Auto_Evol_Instruct/auto_evol_instruct.py:66-82``).
``refusal``
    the evolver refused ("I'm sorry, I can't ...", "As an AI ...").
``prompt_copy``
    the evolving prompt copied back: its section labels (``#Instruction#``, ``### Response``,
    ``#Rewritten Prompt#``, ``#Methods List#`` ...) left inside the text, its meta words
    ("given prompt", "rewritten prompt", "new instruction", "harder version" ...; WizardLM
    rule 4), or a large share of its word 4-grams. A label *leading* an instruction is
    stripped first (``#Instructions#: Write a haiku`` -> ``Write a haiku``).
``too_long``
    longer than :attr:`GateSettings.max_chars` characters.
``language``
    a language other than the parent's (``langdetect``, seeded; see :func:`language_switch`).
``no_gain``
    no information gain over the parent (WizardLM rule 1): a copy or near copy, or no new
    content word (the parent's words with the task removed); borderline cases (one or two
    new content words, the parent's content kept) go to the judge.
``not_instruction``
    a statement or an answer instead of a task or question: the text starts like an answer
    (a list item, "Sure,", a ``### Response:`` label) or no sentence outside a list carries a
    task cue (an imperative task verb, a question, a request phrase); texts without a cue go
    to the judge.
``duplicate``
    the same normalised text as an earlier kept reply of the same round.

Response checks (after the teacher answered; WizardLM rules 2 and 3):

``response_empty``
    the response is empty or only punctuation and stop words.
``response_refusal``
    the response contains "sorry" and is shorter than 80 words.

The judge (:class:`GateJudge`) is the evolver study's judge model (``evolver.judge``) through
:func:`teachfit.scoring.label_judge.label_scorer`: two yes/no questions, few-shot, whose
probabilities are calibrated by contextual calibration (Zhao et al. 2021, "Calibrate Before
Use"; reference tonyzhaozh/few-shot-learning ``run_classification.py``: the label
probabilities of the content-free inputs "N/A", "" and "[MASK]" are averaged and divided out).
A content-free input then scores exactly 0.5; a reply is dropped when its calibrated
probability of "yes" is below ``evolver.gate.threshold`` (default 0.5: less evidence for a
task, or for a gain, than a content-free input gives).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, content_id, read_parquet, read_records, write_json, write_parquet
from teachfit.settings import from_dict as settings_from_dict
from teachfit.studies.evolver.evolve import (
    AUTO_EVOL_OPERATION,
    CARRIED_COLUMNS,
    LINEAGE_COLUMNS,
    REPLY_COLUMNS,
    build_auto_evol_prompt,
    build_evol_prompt,
    parse_auto_evol,
    parse_evolved,
)

log = logging.getLogger(__name__)

INSTRUCTION_REASONS = ("empty", "unparseable", "refusal", "prompt_copy", "too_long", "language", "no_gain",
                       "not_instruction", "duplicate")
RESPONSE_REASONS = ("response_empty", "response_refusal")
#: every drop reason, in the order the checks run
REASONS = (*INSTRUCTION_REASONS, *RESPONSE_REASONS)
#: checks a config may switch off (``evolver.gate.checks``); the others always run, since an empty,
#: unparseable, refused, overlong or repeated reply is never an instruction to train on
OPTIONAL_CHECKS = ("prompt_copy", "language", "no_gain", "not_instruction", "response_empty", "response_refusal")
#: WizardLM §3 rule 2: a response containing "sorry" and shorter than this many words is a refusal
REFUSAL_MAX_WORDS = 80
#: WizardLM §3 rule 2's refusal word (case-insensitive substring)
REFUSAL_WORD = "sorry"

# --------------------------------------------------------------------------- word lists (written here)



def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: English function words: a text made only of these (and punctuation) says nothing
STOP_WORDS = _wordset("""
a about above after again against all am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most
mustn't my myself no nor not of off on once only or other ought our ours ourselves out over own same shan't
she she'd she'll she's should shouldn't so some such than that that's the their theirs them themselves then
there there's these they they'd they'll they're they've this those through to too under until up very was
wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while who who's
whom why why's will with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
also just may might must shall yes ok okay etc s t d ll m re ve
""")
#: words of the evolving task itself: saying "task" or "instruction" adds no information
META_WORDS = _wordset("""
task tasks instruction instructions prompt prompts question questions request please following rewritten
rewrite rewriting given original version harder new created create step
""")
#: verbs that open a task ("Write ...", "Explain ...")
TASK_VERBS = _wordset("""
act add adapt address analyse analyze answer apply argue arrange ask assess assume build calculate categorise
categorize change check choose cite clarify classify code collect combine come compare compile complete compose
compute conjugate connect consider construct contrast continue convert correct count craft create critique
debate debug decide decode deduce define demonstrate derive describe design detail determine develop devise
diagnose discuss distinguish divide do draft draw edit elaborate enumerate estimate evaluate examine explain
explore express extract fill find finish fix format formulate generate give group guess help highlight
identify illustrate imagine implement improve include indicate infer interpret introduce invent investigate
justify label let list locate look make map match measure mention merge modify multiply name note offer order
organise organize outline paraphrase pick plan plot point predict prepare present pretend prioritise
prioritize produce prove provide put rank rate read rearrange recall recommend reflect refactor rephrase
replace report research respond restate review revise rewrite say schedule score select share show simplify
sketch solve sort specify spell split state suggest summarise summarize support tabulate take teach tell test
think trace transform translate turn use verify walk weigh write
""")
# a question word opening a sentence without "?" ("How to bake bread"); "When the sky ..." or "Is"
# there opens a clause or a statement as often as a question, so only "?" makes those a question
_QUESTION_START = re.compile(r"^(?:what|how|why|which|who|whom|whose)\b", re.IGNORECASE)
#: task verbs that are as often a noun opening a statement ("Note to self:", "Test scores rose"):
#: a task cue only when an object-like word follows ("Note the ...", "Walk me through ...")
AMBIGUOUS_VERBS = _wordset("""
note point order state label test group map plot score match share mention support turn put take look
read report present trace rate sketch split format change detail walk think record
""")
_OBJECT_START = _wordset("""
a an the this that these those my your our their his her its it them me us him each every all both some any
no one two three four five six seven eight nine ten how what why which who whom whose whether when where
up down out over about at through on in into for off back
""")
_REQUEST_RE = re.compile(
    r"\b(?:can|could|would|will) you\b|\bi (?:need|want|would like|'d like)\b|\bhelp me\b|"
    r"\byour (?:task|job|goal|assignment) is\b|\byou (?:are|will be) (?:asked|given|required)\b|"
    r"\bplease\b|\bmake sure\b|\bi(?:'m| am) looking for\b", re.IGNORECASE)
_LEAD_IN_RE = re.compile(
    r"^(?:in|using|given|based on|for|without|with|after|before|from|as|if|when|while|considering|"
    r"assuming|suppose|according to|within|on|at|by)\b[^,]{0,150},", re.IGNORECASE)
# quoted material (what to translate, a title to use) says nothing about the instruction's language
_QUOTED_RE = re.compile(r"(?<!\w)'[^'\n]+'(?!\w)|\"[^\"\n]+\"|“[^”\n]+”|‘[^’\n]+’|«[^»\n]+»|„[^“”\n]+[“”]")
_FILLER_RE = re.compile(r"^(?:please|now|then|also|finally|first|second|next|and|but|so|lastly)\b,?\s*",
                        re.IGNORECASE)
_LIST_ITEM_RE = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•+]|\(?[a-z][.)])\s+")
_ANSWER_START_RE = re.compile(
    r"^(?:sure|certainly|of course|absolutely|yes|no|okay|ok|great|correct)\b[,.!:]|^here(?:'s| is| are)\b",
    re.IGNORECASE)

# section labels of evolving prompts (ours and the reference's); a label is a line start such as
# "#Instructions#:", "### Response:", "**Rewritten Prompt:**", "Step 4 #Finally Rewritten Instruction#:"
_LABEL_WORDS = (r"(?:finally\s+)?(?:rewritten|new|created|given|original|evolved|revised|improved)\s+"
                r"(?:instructions?|prompts?|tasks?|questions?)|instructions?|prompts?|tasks?|questions?|"
                r"methods?\s+list|methods?(?:\s*\d+)?|plan|input|output|responses?|answers?|solutions?|"
                r"results?|explanations?|examples?")
_ANSWER_LABEL = re.compile(r"^(?:output|responses?|answers?|solutions?|results?|explanations?)$", re.IGNORECASE)
_LABEL_RE = re.compile(
    r"^\s*(?:step\s*\d+\s*)?(?:#{1,6}|\*\*)?\s*(?P<word>" + _LABEL_WORDS + r")\s*(?:#{1,6})?\s*(?:\*\*)?\s*"
    r"(?::\s*(?:\*\*)?|#|\n|$)",
    re.IGNORECASE)
# a label anywhere inside the text (the prompt's layout copied back, Auto Evol's "Method 1:" included)
_INNER_LABEL_RE = re.compile(
    r"#\s*(?:" + _LABEL_WORDS + r")\s*#|^\s*#{2,6}\s*(?:" + _LABEL_WORDS + r")\b\s*:?\s*$|"
    r"^\s*(?:step\s*\d+\s*)?#\s*(?:" + _LABEL_WORDS + r")\s*\d*\s*:|^\s*(?:[a-z]:\s*)?methods?\s*\d+\s*:",
    re.IGNORECASE | re.MULTILINE)
# the evolving prompt's meta words (WizardLM: "given prompt", "rewritten prompt", "#Rewritten Prompt#")
_LEAK_RE = re.compile(
    r"\b(?:the\s+)?(?:given|original|rewritten|created|new|evolved|harder)\s+(?:instruction|prompt)s?\b|"
    r"\bharder version\b|\bmore complex version\b|\bhow to make it harder\b|\breply with the\b|"
    r"\bkeep the rewrite short\b|\bi(?: will|'ll| am going to) rewrite\b|\bthe instruction below\b|"
    r"\bmethods list\b|\bfinal(?:ly rewritten)? (?:instruction|prompt)s?\b|\bwell-known ai assistants\b|"
    r"\bmak(?:e|es|ing) (?:the|this) (?:instruction|prompt|task) (?:harder|more (?:complex|difficult|specific))\b",
    re.IGNORECASE)
_REFUSAL_START_RE = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry[,!.]|i apologi[sz]e|unfortunately,? i\b|"
    r"i (?:cannot|can ?not|can'?t|won'?t|am unable|'m unable|am not able|'m not able)\b|"
    r"as an ai\b|as a(?:n ai)? language model\b)",
    re.IGNORECASE)
_REFUSAL_ANY_RE = re.compile(r"\bas an ai (?:language )?model\b|\bas a large language model\b", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces (copy and duplicate tests)."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def words_of(text: str) -> list[str]:
    """Lower-cased words of ``text``, in-word apostrophes kept ("can't"), quotes and ``_`` dropped."""
    return [w.strip("'") for w in re.findall(r"[^\W_]+(?:'[^\W_]+)*", text.lower().replace("’", "'"))]


def content_words(text: str) -> list[str]:
    """The words of ``text`` (:func:`words_of`) that are not stop words (order and repeats kept)."""
    return [w for w in words_of(text) if w not in STOP_WORDS]


def is_vacuous(text: str | None) -> bool:
    """Empty, or only punctuation and stop words after normalisation (WizardLM §3 rule 3)."""
    return text is None or not content_words(text)


def is_refusal(text: str) -> bool:
    """A refusal or AI disclaimer at the start of an evolver reply ("I'm sorry", "As an AI...")."""
    from teachfit.studies.evolver.evolve import _MARKER_RE

    body = _MARKER_RE.sub(" ", text, count=1)
    return bool(_REFUSAL_START_RE.match(body.strip()) or _REFUSAL_ANY_RE.search(text))


def is_copy(original: str, evolved: str, min_new_words: int = 2, copy_ratio: float = 0.9) -> bool:
    """Equal after normalization (case, punctuation, spaces), or a near copy.

    A near copy adds fewer than ``min_new_words`` new words (multiset difference of normalized
    words) *and* has a character similarity ratio (``difflib.SequenceMatcher``) of at least
    ``copy_ratio`` to the original.
    """
    a, b = normalize_text(original), normalize_text(evolved)
    if a == b:
        return True
    new_words = sum((Counter(b.split()) - Counter(a.split())).values())
    if new_words >= min_new_words:
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= copy_ratio


def stem(word: str) -> str:
    """A crude English stem, enough to match inflections ("volcanoes" / "volcano", "erupts" /
    "erupt", "describing" / "describe"): strip one of -ies (-> y), -es after o/x/ch/sh/ss/z, -s,
    -ing, -ed, then a final -e; words of three letters or fewer are kept."""
    if len(word) <= 3:
        return word
    for suffix, repl in (("ies", "y"), ("oes", "o"), ("xes", "x"), ("ches", "ch"), ("shes", "sh"),
                         ("sses", "ss"), ("zes", "z"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not (suffix == "s" and word.endswith("ss")):
            word = word[: -len(suffix)] + repl
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def new_content_words(parent: str, evolved: str) -> list[str]:
    """Content words of ``evolved`` (not stop words, not :data:`META_WORDS`) whose stem
    (:func:`stem`) is not a stem of ``parent``'s words."""
    have = {stem(w) for w in words_of(parent)}
    return [w for w in dict.fromkeys(content_words(evolved)) if stem(w) not in have and w not in META_WORDS]


def english_share(text: str) -> float:
    """Share of ``text``'s words that are English function words (:data:`STOP_WORDS`); 0 for no words."""
    words = words_of(text)
    return sum(w in STOP_WORDS for w in words) / len(words) if words else 0.0


def strip_labels(text: str) -> tuple[str, bool]:
    """Strip the evolving prompt's section labels that *lead* the text or end it.

    Returns ``(text, answer_label)``: the text after every leading label (``#Instructions#:``,
    ``### Response:``, ``**Task:**``, ``#Method 1:``, a bare ``#`` at a line start) and without
    a trailing label line (``### Answer:``), and whether a stripped leading label named an
    answer (response, answer, output, solution ...), i.e. what follows is an answer.
    """
    answer = False
    text = text.strip()
    for _ in range(8):
        m = _LABEL_RE.match(text)
        if not m:
            break
        if _ANSWER_LABEL.match(re.sub(r"\s+", " ", m.group("word").strip())):
            answer = True
        text = text[m.end():].strip()
    lines = text.splitlines()
    while lines and (not lines[-1].strip() or _LABEL_RE.fullmatch(lines[-1].strip() + "\n")
                     or _LABEL_RE.fullmatch(lines[-1].strip())):
        lines.pop()
    # a bare '#' (or '##') opening a line is a marker, not text (a '#Label:' line stays, it is a
    # copied section of the prompt: see _INNER_LABEL_RE)
    text = "\n".join(ln if _INNER_LABEL_RE.match(ln) else re.sub(r"^\s*#{1,6}(?=\S)|^\s*#{1,6}\s*$", "", ln)
                     for ln in lines).strip()
    return text, answer


def template_overlap(text: str, prompt: str | None, parent: str | None, n: int = 4) -> float:
    """Share of ``text``'s word ``n``-grams that occur in the evolving prompt's own wording
    (``prompt`` with the ``parent`` instruction cut out); 0 without a prompt or with fewer than
    ``n`` words."""
    if not prompt:
        return 0.0
    fixed = prompt.replace(parent.strip(), " ") if parent else prompt
    words = normalize_text(text).split()
    grams = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
    if not grams:
        return 0.0
    fw = normalize_text(fixed).split()
    have = {tuple(fw[i:i + n]) for i in range(len(fw) - n + 1)}
    return len(grams & have) / len(grams)


def _sentences(text: str) -> list[tuple[str, bool]]:
    """``(sentence, in_list_item)`` for every sentence of every line."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        item = bool(_LIST_ITEM_RE.match(s))
        body = _LIST_ITEM_RE.sub("", s, count=1)
        out += [(p.strip(), item) for p in re.split(r"(?<=[.!?;])\s+", body) if p.strip()]
    return out


def _has_task_cue(sentence: str) -> bool:
    s = re.sub(r"^[\"'“‘*_`(\[]+", "", sentence).strip()
    if s.rstrip("\"'”’*_`)]").endswith("?"):
        return True
    if _REQUEST_RE.search(s):
        return True
    for _ in range(3):
        stripped = _FILLER_RE.sub("", s, count=1)
        if stripped == s:
            break
        s = stripped
    if _imperative(s):
        return True
    if _LEAD_IN_RE.match(s):
        # "Given the list 4, 9, 1, sort it": the task may follow any comma of the lead-in
        parts = s.split(",")
        return any(_imperative(_FILLER_RE.sub("", ",".join(parts[i:]).strip(), count=1)) for i in range(1, len(parts)))
    return False


def _imperative(s: str) -> bool:
    words = words_of(s)
    if not words:
        return False
    if words[0] in AMBIGUOUS_VERBS:
        return len(words) > 1 and (words[1] in _OBJECT_START or words[1].isdigit())
    if words[0] in TASK_VERBS or (words[0] in ("let's", "let") and len(words) > 1):
        return True
    return bool(_QUESTION_START.match(s)) and len(words) >= 3


def task_form(text: str, answer_label: bool = False) -> str:
    """``"answer"``, ``"task"`` or ``"unknown"``: the deterministic part of the not-an-instruction test.

    ``"answer"``: the text follows an answer label, starts with a list item, or opens like a
    reply ("Sure,", "Yes,", "Here is"). ``"task"``: some sentence outside a list item asks a
    question (ends in "?" or opens with a question word), opens with a task verb
    (:data:`TASK_VERBS`, after lead-ins such as "In 50 words," or "Please"), or makes a request
    ("Can you", "I need", "Your task is"). ``"unknown"``: neither (a statement or a fragment,
    or a task phrased in a way these cues miss); the judge decides.
    """
    first = text.lstrip()
    if answer_label or _LIST_ITEM_RE.match(first) or _ANSWER_START_RE.match(first):
        return "answer"
    if any(_has_task_cue(s) for s, item in _sentences(text) if not item):
        return "task"
    return "unknown"


_LANG_READY = False


def _detect(text: str) -> dict[str, float]:
    global _LANG_READY
    import langdetect
    from langdetect.lang_detect_exception import LangDetectException

    if not _LANG_READY:
        langdetect.DetectorFactory.seed = 0  # deterministic (langdetect samples n-grams)
        _LANG_READY = True
    try:
        return {r.lang: float(r.prob) for r in langdetect.detect_langs(text)}
    except LangDetectException:
        return {}


#: a text with at least this share of English function words is English (see :func:`language_switch`)
ENGLISH_SHARE = 0.2


def is_english(text: str, min_words: int = 4, confident: float = 0.5) -> bool:
    """True unless ``text`` (with at least ``min_words`` alphabetic words) is confidently
    (``langdetect`` probability >= ``confident``) in another language; short texts and texts with
    at least :data:`ENGLISH_SHARE` English function words count as English; quoted spans are ignored."""
    text = _QUOTED_RE.sub(" ", text)
    if len(re.findall(r"[^\W\d_]{2,}", text)) < min_words or english_share(text) >= ENGLISH_SHARE:
        return True
    d = _detect(text)
    if not d:
        return True
    lang, prob = max(d.items(), key=lambda kv: kv[1])
    return lang == "en" or prob < confident


def language_switch(parent: str, evolved: str, min_words: int = 4, confident: float = 0.9,
                    absent: float = 0.1) -> bool:
    """True when ``evolved`` is written in a language other than ``parent``'s.

    ``langdetect`` (seeded) is unreliable on very short texts (it calls "Add 2 and 3." Welsh),
    so the test only fires when both texts have at least ``min_words`` alphabetic words, the
    parent's most likely language ``L`` has probability >= 0.5, ``evolved``'s most likely
    language is another one with probability >= ``confident``, and ``evolved`` gives ``L`` a
    probability below ``absent`` (langdetect lists languages above 0.1 only). A mixed text
    ("Translate 'La bibliothèque ...' into English") keeps some of the parent's language and
    passes, and quoted spans are ignored. Two texts whose words are at least :data:`ENGLISH_SHARE` English function words are
    both English whatever langdetect says (it calls "How much sleep do teenagers need?" Dutch
    with probability 0.99999).
    """
    def words(t: str) -> int:
        return len(re.findall(r"[^\W\d_]{2,}", t))

    parent, evolved = _QUOTED_RE.sub(" ", parent), _QUOTED_RE.sub(" ", evolved)
    if words(parent) < min_words or words(evolved) < min_words:
        return False
    if english_share(parent) >= ENGLISH_SHARE and english_share(evolved) >= ENGLISH_SHARE:
        return False  # both plainly English (langdetect calls "How much sleep do teenagers need?" Dutch)
    p, e = _detect(parent), _detect(evolved)
    if not p or not e:
        return False
    lang, prob = max(p.items(), key=lambda kv: kv[1])
    other, other_prob = max(e.items(), key=lambda kv: kv[1])
    return prob >= 0.5 and other != lang and other_prob >= confident and e.get(lang, 0.0) < absent


# --------------------------------------------------------------------------- settings


@dataclass
class GateSettings:
    """The gate's config section ``evolver.gate`` (validated by the schema; no defaults here).

    ``checks``: the optional checks that run (:data:`OPTIONAL_CHECKS`); ``judge``: ask the
    evolver judge where the deterministic checks cannot decide (``not_instruction`` without a
    task cue, ``no_gain`` with one or two new content words); without a judge the first are
    dropped and the second kept; ``threshold``: calibrated probability of "yes" below which the
    judge drops a reply.
    """

    checks: list[str] = field(metadata={"help": "optional checks that run", "choices": OPTIONAL_CHECKS})
    judge: bool = field(metadata={"help": "ask evolver.judge where the deterministic checks cannot decide"})
    threshold: float = field(metadata={"help": "drop when the calibrated P(yes) is below this"})
    version: int = field(metadata={"help": "bump when the gate's semantics change"})
    max_chars: int = field(default=4000, metadata={"help": "longer evolved instructions are dropped (too_long)"})
    min_new_words: int = field(default=2, metadata={"help": "near-copy test: fewer new words than this ..."})
    copy_ratio: float = field(default=0.9, metadata={"help": "... and at least this similarity is a copy"})
    overlap: float = field(default=0.3, metadata={"help": "prompt_copy: share of 4-grams from the prompt"})

    def __post_init__(self) -> None:
        bad = [c for c in self.checks if c not in OPTIONAL_CHECKS]
        if bad:
            raise ValueError(f"gate.checks: {bad} not allowed; allowed: {', '.join(OPTIONAL_CHECKS)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"gate.threshold must be in [0, 1], got {self.threshold}")
        if self.max_chars < 1 or self.min_new_words < 0 or not 0 < self.copy_ratio <= 1 or not 0 < self.overlap <= 1:
            raise ValueError("gate: max_chars >= 1, min_new_words >= 0, 0 < copy_ratio <= 1, 0 < overlap <= 1")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> GateSettings:
        """Raises ValueError naming unknown keys (and the class, missing ones)."""
        return settings_from_dict(cls, d, "gate")

    @classmethod
    def deterministic(cls, checks: Sequence[str] = OPTIONAL_CHECKS) -> GateSettings:
        """Every check, no judge (what :func:`classify_failure` applies)."""
        return cls(checks=list(checks), judge=False, threshold=0.5, version=1)


# --------------------------------------------------------------------------- one reply


@dataclass
class Verdict:
    """The deterministic verdict on one evolution reply.

    ``reason``: the drop reason, or None; ``instruction``: the cleaned instruction (parsed,
    labels stripped; None when nothing is left); ``pending``: judge questions still open
    (``"not_instruction"``: no task cue; ``"no_gain"``: one or two new content words);
    ``strict``: the open questions that drop the reply when no judge answers them (a missing
    task cue in English text; the cue lists are English, so other languages are kept).
    """

    reason: str | None
    instruction: str | None
    pending: tuple[str, ...] = ()
    strict: tuple[str, ...] = ()


PARSERS: dict[str, Callable[[str | None], str | None]] = {"evol_instruct": parse_evolved,
                                                          "auto_evol": parse_auto_evol}


def check_instruction(parent: str, reply: str | None, *, scenario: str = "evol_instruct", prompt: str | None = None,
                      settings: GateSettings | None = None) -> Verdict:
    """The deterministic instruction checks of one reply, in :data:`INSTRUCTION_REASONS` order.

    ``parent``: the instruction that was evolved; ``reply``: the evolver's raw reply;
    ``scenario``: evol_instruct | auto_evol (which parser); ``prompt``: the evolving prompt
    (for the 4-gram copy test; rebuilt by the caller when the reply table has it).
    ``duplicate`` needs the other replies of the round and is decided by :func:`gate_replies`.
    Raises ValueError for an unknown scenario.
    """
    s = settings or GateSettings.deterministic()
    if scenario not in PARSERS:
        raise ValueError(f"gate: unknown scenario {scenario!r}; allowed: {', '.join(PARSERS)}")
    if reply is None or not reply.strip():
        return Verdict("empty", None)
    parsed = PARSERS[scenario](reply)
    if parsed is None:
        if scenario == "auto_evol" and not is_refusal(reply):
            return Verdict("unparseable", None)
        return Verdict("refusal" if is_refusal(reply) else "empty", None)
    text, answer_label = strip_labels(parsed)
    if is_vacuous(text):
        return Verdict("empty", text or None)
    if is_refusal(reply) or is_refusal(text):
        return Verdict("refusal", text)
    if "prompt_copy" in s.checks and (_INNER_LABEL_RE.search(text) or _LEAK_RE.search(text)
                                      or template_overlap(text, prompt, parent) >= s.overlap):
        return Verdict("prompt_copy", text)
    if len(text) > s.max_chars:
        return Verdict("too_long", text)
    if "language" in s.checks and language_switch(parent, text):
        return Verdict("language", text)
    form = task_form(text, answer_label) if "not_instruction" in s.checks else "task"
    if form == "answer":
        return Verdict("not_instruction", text)
    pending: list[str] = []
    if "no_gain" in s.checks:
        new = new_content_words(parent, text)
        if is_copy(parent, text, s.min_new_words, s.copy_ratio) or not new:
            return Verdict("no_gain", text)
        kept = {stem(w) for w in content_words(text)}
        parent_words = {stem(w) for w in content_words(parent) if w not in META_WORDS}
        coverage = len(parent_words & kept) / len(parent_words) if parent_words else 0.0
        if len(new) <= 2 and coverage >= 0.8:
            pending.append("no_gain")
    strict: tuple[str, ...] = ()
    if form == "unknown":
        pending.insert(0, "not_instruction")
        strict = ("not_instruction",) if is_english(text) else ()
    return Verdict(None, text, tuple(pending), strict)


def classify_failure(original: str, evolved_text: str | None, *, scenario: str = "evol_instruct",
                     prompt: str | None = None, settings: GateSettings | None = None) -> str | None:
    """Why an evolver reply is not a valid instruction (a reason of :data:`INSTRUCTION_REASONS`),
    or ``None``: the gate's deterministic decision, without a judge.

    Open judge questions are decided the strict way for a missing task cue (``not_instruction``)
    and the lenient way for a borderline gain (kept), see :class:`GateSettings`.
    """
    v = check_instruction(original, evolved_text, scenario=scenario, prompt=prompt, settings=settings)
    if v.reason is None and v.strict:
        return v.strict[0]
    return v.reason


def response_failure(response: str | None, checks: Sequence[str] = OPTIONAL_CHECKS) -> str | None:
    """WizardLM §3 rules 2 and 3 on the teacher's response: ``response_empty`` (empty, or only
    punctuation and stop words), ``response_refusal`` (contains "sorry", fewer than 80 words),
    or ``None``."""
    if "response_empty" in checks and (response is None or is_vacuous(response)):
        return "response_empty"
    if ("response_refusal" in checks and response is not None and REFUSAL_WORD in response.lower()
            and len(response.split()) < REFUSAL_MAX_WORDS):
        return "response_refusal"
    return None


# --------------------------------------------------------------------------- the judge

LABEL_WORDS = ("yes", "no")
CONTENT_FREE = ("N/A", "", "[MASK]")

_REQUEST_INTRO = (
    "Each text below was written as a task for an AI assistant. Answer yes if the text asks the "
    "assistant to do something or asks it a question. Answer no if it is only a statement, a fact, an "
    "answer, a list of tips or a fragment.\n\n"
)
_REQUEST_SHOTS = (
    ("Describe how a rainbow forms, in two short paragraphs.", "yes"),
    ("Rainbows form when sunlight is bent inside raindrops.", "no"),
    ("Which planet in our solar system has the longest day?", "yes"),
    ("1. Drink more water. 2. Sleep eight hours. 3. Walk every day.", "no"),
)
_GAIN_INTRO = (
    "Each pair below shows an original task and a rewritten task. Answer yes if the rewritten task asks "
    "for more than the original: an extra requirement, more depth, more specific details, or a new "
    "topic. Answer no if it asks for the same thing or less.\n\n"
)
_GAIN_SHOTS = (
    ("Write a poem about the sea.", "Write a poem about the sea in which every stanza ends with the word salt.",
     "yes"),
    ("List three fruits.", "List three fruits.", "no"),
    ("Explain how vaccines work.", "Explain how mRNA vaccines train the immune system, step by step.", "yes"),
    ("Give two tips for sleeping well.", "Give tips for sleeping.", "no"),
)


def request_prompt(text: str) -> str:
    """Few-shot yes/no prompt: is ``text`` a task or question (yes) or not (no)? Ends in ``Request:``."""
    shots = "".join(f"Text: {t}\nRequest: {a}\n\n" for t, a in _REQUEST_SHOTS)
    return f"{_REQUEST_INTRO}{shots}Text: {text.strip()}\nRequest:"


def gain_prompt(parent: str, text: str) -> str:
    """Few-shot yes/no prompt: does ``text`` ask for more than ``parent``? Ends in ``More:``."""
    shots = "".join(f"Original: {p}\nRewritten: {t}\nMore: {a}\n\n" for p, t, a in _GAIN_SHOTS)
    return f"{_GAIN_INTRO}{shots}Original: {parent.strip()}\nRewritten: {text.strip()}\nMore:"


def contextual_calibration(p_yes: np.ndarray, p_cf_yes: float) -> np.ndarray:
    """Calibrated P(yes) of a two-label judge (Zhao et al. 2021, diagonal W, b = 0).

    ``p_yes``: P(yes) renormalised over the two labels, shape ``[n]``; ``p_cf_yes``: the mean
    P(yes) of the content-free inputs. ``q ∝ (p / p_cf, (1-p) / (1-p_cf))``, renormalised, so
    a content-free input maps to 0.5. Reference: tonyzhaozh/few-shot-learning
    ``run_classification.py`` (``get_p_content_free``, ``eval_accuracy`` with ``diagonal_W``).
    """
    p = np.clip(np.asarray(p_yes, dtype=np.float64), 1e-9, 1 - 1e-9)
    cf = float(np.clip(p_cf_yes, 1e-9, 1 - 1e-9))
    yes, no = p / cf, (1 - p) / (1 - cf)
    return yes / (yes + no)


class GateJudge:
    """The judge's two calibrated questions over a ``score_fn(prompts, words) -> [n, 2]`` (label
    probabilities, :func:`teachfit.scoring.label_judge.label_scorer`)."""

    def __init__(self, score_fn: Callable[[list[str], Sequence[str]], Any]) -> None:
        self.score_fn = score_fn
        self._cf: dict[str, float] = {}

    def _p_yes(self, prompts: list[str]) -> np.ndarray:
        from teachfit.scoring.label_judge import first_label_share

        if not prompts:
            return np.zeros(0)
        return first_label_share(self.score_fn(prompts, list(LABEL_WORDS)), len(prompts))

    def _content_free(self, kind: str) -> float:
        if kind not in self._cf:
            prompts = ([request_prompt(c) for c in CONTENT_FREE] if kind == "request"
                       else [gain_prompt(c, c) for c in CONTENT_FREE])
            self._cf[kind] = float(np.mean(self._p_yes(prompts)))
        return self._cf[kind]

    def is_request(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated P(the text is a task or question), shape ``[len(texts)]``."""
        if not texts:
            return np.zeros(0)
        return contextual_calibration(self._p_yes([request_prompt(t) for t in texts]), self._content_free("request"))

    def has_gain(self, parents: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Calibrated P(the text asks for more than its parent), shape ``[len(texts)]``."""
        if not texts:
            return np.zeros(0)
        raw = self._p_yes([gain_prompt(p, t) for p, t in zip(parents, texts)])
        return contextual_calibration(raw, self._content_free("gain"))

    @property
    def content_free(self) -> dict[str, float]:
        """Mean content-free P(yes) of each question asked so far."""
        return dict(self._cf)


# --------------------------------------------------------------------------- a round of replies

def gate_replies(replies: pl.DataFrame, scenario: str, settings: GateSettings,
                 judge: GateJudge | Callable[[], GateJudge] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The instruction gate over one round's replies (:data:`REPLY_COLUMNS` plus carried columns).

    ``judge``: a :class:`GateJudge`, or a zero-argument factory called only when some reply
    has an open question (the judge model is loaded only then); ignored unless
    ``settings.judge``. Returns ``(kept, verdicts)``: ``kept`` has :data:`LINEAGE_COLUMNS`
    plus the carried columns (``id = content_id(parent_id, operation, round, instruction)``);
    ``verdicts`` has one row per reply: ``parent_id``, ``operation``, ``reply``, ``instruction``
    (cleaned; null when nothing was left), ``reason`` (null = kept), ``pending`` (the judge's
    open questions, comma-joined), ``p_request`` and ``p_gain`` (calibrated, NaN when not asked).
    """
    from tqdm.auto import tqdm

    missing = [c for c in REPLY_COLUMNS if c not in replies.columns]
    if missing:
        raise DataError(f"gate: reply table lacks column(s) {missing}; has {replies.columns}")
    rows = list(replies.iter_rows(named=True))
    verdicts = [check_instruction(r["parent"], r["reply"], scenario=scenario, prompt=r["prompt"], settings=settings)
                for r in tqdm(rows, desc="gate", leave=False)]
    n = len(rows)
    p_request = np.full(n, np.nan)
    p_gain = np.full(n, np.nan)
    reasons = [v.reason for v in verdicts]
    ask_req = [i for i, v in enumerate(verdicts) if v.reason is None and "not_instruction" in v.pending]
    ask_gain = [i for i, v in enumerate(verdicts) if v.reason is None and "no_gain" in v.pending]
    if settings.judge and (ask_req or ask_gain):
        j = judge() if callable(judge) and not isinstance(judge, GateJudge) else judge
        if j is None:
            raise ValueError("gate: settings.judge is on but no judge was given")
        p_request[ask_req] = j.is_request([verdicts[i].instruction for i in ask_req])
        p_gain[ask_gain] = j.has_gain([rows[i]["parent"] for i in ask_gain], [verdicts[i].instruction for i in ask_gain])
        for i in ask_gain:
            if p_gain[i] < settings.threshold:
                reasons[i] = "no_gain"
        for i in ask_req:
            if p_request[i] < settings.threshold:
                reasons[i] = "not_instruction"
        log.info("gate judge: %d request and %d gain questions; content-free P(yes) %s", len(ask_req),
                 len(ask_gain), j.content_free)
    elif not settings.judge:
        for i, v in enumerate(verdicts):
            if reasons[i] is None and v.strict:
                reasons[i] = v.strict[0]
    carried = [c for c in CARRIED_COLUMNS if c in replies.columns]
    kept_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, (r, v) in enumerate(zip(rows, verdicts)):
        if reasons[i] is None:
            key = normalize_text(v.instruction or "")
            if key in seen:
                reasons[i] = "duplicate"
                continue
            seen.add(key)
            kept_rows.append({
                "id": content_id(r["parent_id"], r["operation"], r["round"], v.instruction),
                "parent_id": r["parent_id"], "root_id": r["root_id"] or r["parent_id"], "round": r["round"],
                "operation": r["operation"], "evolver": r["evolver"], "instruction": v.instruction,
                **{c: r[c] for c in carried}})
    schema: dict[str, Any] = {c: pl.String for c in LINEAGE_COLUMNS}
    schema["round"] = pl.Int64
    schema.update({c: replies.schema[c] for c in carried})
    kept = pl.DataFrame(kept_rows, schema=schema).with_columns(pl.lit(scenario).alias("scenario"))
    table = pl.DataFrame({
        "parent_id": [r["parent_id"] for r in rows], "operation": [r["operation"] for r in rows],
        "reply": [r["reply"] for r in rows], "instruction": [v.instruction for v in verdicts],
        "reason": reasons, "pending": [",".join(v.pending) for v in verdicts],
        "p_request": p_request, "p_gain": p_gain,
    }, schema={"parent_id": pl.String, "operation": pl.String, "reply": pl.String, "instruction": pl.String,
               "reason": pl.String, "pending": pl.String, "p_request": pl.Float64, "p_gain": pl.Float64})
    return kept, table


def _counts(reasons: Sequence[str | None], allowed: Sequence[str]) -> dict[str, int]:
    c = Counter(r for r in reasons if r is not None)
    return {r: int(c.get(r, 0)) for r in allowed}


def _judge_factory(judge_dir: str | Path, backend: Mapping[str, Any], threads: int | None) -> Callable[[], GateJudge]:
    def make() -> GateJudge:
        from teachfit.scoring.label_judge import label_scorer

        return GateJudge(label_scorer(judge_dir, dict(backend), int(backend["batch_size"]), threads))

    return make


# --------------------------------------------------------------------------- rule gate_instructions


def gate_instructions(replies: str | Path, judge_dir: str | Path, evolved: str | Path, verdicts: str | Path,
                      drops: str | Path, scenario: str, evolver: str, round: int, gate: Mapping[str, Any],
                      backend: Mapping[str, Any], threads: int = 1) -> pl.DataFrame:
    """Rule ``gate_instructions``: the validity gate on one round of one evolver's replies.

    Inputs: ``replies`` (``evolve_instructions``' table, :data:`REPLY_COLUMNS` plus carried
    columns) and ``judge_dir`` (``evolver.judge``, loaded only when a reply has an open
    question and ``gate.judge`` is on). Params: ``scenario``, ``evolver``, ``round`` (metadata),
    ``gate`` (``evolver.gate``, :class:`GateSettings`), ``backend`` (the judge's engine
    settings; label scoring reads logits, :func:`teachfit.scoring.label_judge.label_scorer`).

    Writes ``evolved`` (the valid instructions with lineage and ``scenario``; the next round
    evolves these), ``verdicts`` (one row per reply, see :func:`gate_replies`) and ``drops``
    (JSON: evolver, scenario, round, input_rows, kept, dropped by reason of
    :data:`INSTRUCTION_REASONS`, kept operations). Returns the kept rows. Raises DataError on
    a malformed reply table.
    """
    settings = GateSettings.from_dict(gate)
    table = read_parquet(replies, required=list(REPLY_COLUMNS))
    kept, verdict_table = gate_replies(table, scenario, settings, _judge_factory(judge_dir, backend, threads))
    counts = _counts(verdict_table["reason"].to_list(), INSTRUCTION_REASONS)
    log.info("%s round %d (%s): %d of %d replies are valid instructions; dropped %s", scenario, round, evolver,
             kept.height, table.height, {k: v for k, v in counts.items() if v})
    write_parquet(verdict_table, verdicts)
    write_json({"evolver": evolver, "scenario": scenario, "round": round, "input_rows": table.height,
                "kept": kept.height, "dropped": counts,
                "operations": dict(Counter(kept["operation"].to_list())) if kept.height else {}}, drops)
    write_parquet(kept, evolved)
    return kept


# --------------------------------------------------------------------------- rule gate_responses


def gate_responses(instructions: str | Path, responses: str | Path, answered: str | Path, drops: str | Path,
                   evolver: str, scenario: str, gate: Mapping[str, Any]) -> pl.DataFrame:
    """Rule ``gate_responses``: WizardLM's response rules on the teacher's answers to one evolver's
    pool of valid instructions, before the equal-size sets are built.

    Inputs: ``instructions`` (the pool, ``pool_evolved``: ``id``, ``instruction``, ``round``)
    and ``responses`` (the teacher's kept response per instruction, ``select_responses``:
    ``id``, ``response`` and the instruction's columns). Params: ``evolver``, ``scenario``
    (metadata), ``gate`` (``evolver.gate``: which response checks run).

    Writes ``answered`` (the response rows that pass, one per valid instruction) and ``drops``
    (JSON: evolver, scenario, and per round ``input_rows``, ``valid`` and ``dropped`` by
    :data:`RESPONSE_REASONS`). Raises DataError when an instruction of the pool has no
    response or a response has no instruction (nothing is dropped silently).
    """
    settings = GateSettings.from_dict(gate)
    pool = read_parquet(instructions, required=["id", "instruction", "round"])
    resp = read_parquet(responses, required=["id", "response"])
    if resp["id"].n_unique() != resp.height:
        raise DataError(f"{responses}: more than one response per instruction id")
    missing = set(pool["id"]) - set(resp["id"])
    extra = set(resp["id"]) - set(pool["id"])
    if missing or extra:
        raise DataError(f"{responses}: {len(missing)} instruction(s) of {instructions} without a response and "
                        f"{len(extra)} response(s) without an instruction (e.g. {sorted(missing or extra)[:3]})")
    resp = resp.drop([c for c in ("round",) if c in resp.columns]).join(pool.select("id", "round"), on="id", how="left")
    reasons = [response_failure(r, settings.checks) for r in resp["response"].to_list()]
    resp = resp.with_columns(pl.Series("_reason", reasons, dtype=pl.String))
    per_round = []
    for rnd in sorted(set(pool["round"].to_list())):
        sub = resp.filter(pl.col("round") == rnd)
        c = _counts(sub["_reason"].to_list(), RESPONSE_REASONS)
        per_round.append({"round": int(rnd), "input_rows": sub.height, "valid": sub.height - sum(c.values()),
                          "dropped": c})
    kept = resp.filter(pl.col("_reason").is_null()).drop("_reason")
    log.info("%s / %s: %d of %d answered instructions pass the response checks", evolver, scenario, kept.height,
             resp.height)
    write_json({"evolver": evolver, "scenario": scenario, "rounds": per_round}, drops)
    write_parquet(kept, answered)
    return kept


# --------------------------------------------------------------------------- the labelled set

LABELS_FILE = "evolution_gate_labels.jsonl"
LABEL_KEYS = ("id", "split", "scenario", "operation", "parent", "reply", "response", "label")
#: ``dev``: written together with the gate's rules (an in-sample check); ``heldout``: written after
#: the rules were frozen and not used to change them
SPLITS = ("dev", "heldout")


def load_gate_labels(path: str | Path | None = None) -> pl.DataFrame:
    """The project's labelled evolution replies (default ``teachfit/data/evolution_gate_labels.jsonl``):
    ``id``, ``split`` (:data:`SPLITS`), ``scenario``, ``operation``, ``parent``, ``reply``, ``response`` (the teacher's answer
    or null), ``label`` (``valid`` or the expected reason of :data:`REASONS`), ``note``.
    Raises DataError naming the line of a bad record."""
    from teachfit.io import package_data

    path = Path(path) if path is not None else package_data(LABELS_FILE)
    recs = read_records(path)
    for i, r in enumerate(recs, start=1):
        missing = [k for k in LABEL_KEYS if k not in r]
        if missing:
            raise DataError(f"{path}: record {i} lacks {missing}")
        if r["label"] not in ("valid", *REASONS):
            raise DataError(f"{path}: record {i} has label {r['label']!r}; allowed: valid, {', '.join(REASONS)}")
        if r["scenario"] not in PARSERS:
            raise DataError(f"{path}: record {i} has scenario {r['scenario']!r}")
        if r["split"] not in SPLITS:
            raise DataError(f"{path}: record {i} has split {r['split']!r}; allowed: {', '.join(SPLITS)}")
    df = pl.DataFrame([{**{k: r[k] for k in LABEL_KEYS}, "note": r.get("note", "")} for r in recs],
                      schema={"id": pl.String, "split": pl.String, "scenario": pl.String, "operation": pl.String,
                              "parent": pl.String, "reply": pl.String, "response": pl.String, "label": pl.String,
                              "note": pl.String})
    if df["id"].n_unique() != df.height:
        raise DataError(f"{path}: ids are not unique")
    return df


def evolving_prompt(parent: str, scenario: str, operation: str) -> str:
    """The prompt that produced a reply (:func:`build_evol_prompt` / :func:`build_auto_evol_prompt`)."""
    if scenario == "auto_evol" or operation == AUTO_EVOL_OPERATION:
        return build_auto_evol_prompt(parent)
    return build_evol_prompt(parent, operation)


def predict_labels(labels: pl.DataFrame, settings: GateSettings,
                   judge: GateJudge | Callable[[], GateJudge] | None = None) -> pl.DataFrame:
    """The gate's reason for every labelled reply (null = valid): the instruction gate per
    scenario, then the response checks on replies that pass and carry a response. Adds
    ``predicted``, ``p_request`` and ``p_gain`` to ``labels``."""
    frames = []
    for scenario in sorted(set(labels["scenario"].to_list())):
        sub = labels.filter(pl.col("scenario") == scenario)
        replies = sub.select(
            pl.col("id").alias("parent_id"), pl.col("id").alias("root_id"), pl.lit(1).alias("round"),
            pl.col("operation"), pl.lit("labelled").alias("evolver"), pl.col("parent"),
            pl.Series("prompt", [evolving_prompt(p, scenario, o) for p, o in zip(sub["parent"], sub["operation"])]),
            pl.col("reply"))
        _, verdicts = gate_replies(replies, scenario, settings, judge)
        reasons = verdicts["reason"].to_list()
        # duplicates are a property of a round, not of one labelled reply
        reasons = [None if r == "duplicate" else r for r in reasons]
        reasons = [response_failure(resp, settings.checks) if r is None and resp is not None else r
                   for r, resp in zip(reasons, sub["response"].to_list())]
        frames.append(sub.with_columns(pl.Series("predicted", reasons, dtype=pl.String),
                                       verdicts["p_request"], verdicts["p_gain"]))
    return pl.concat(frames).sort("id")


def gate_quality(predicted: pl.DataFrame) -> pl.DataFrame:
    """Precision and recall of "invalid" detection, overall and per labelled kind.

    ``predicted``: :func:`predict_labels`' table. Rows: ``kind`` = ``all`` (invalid = any
    reason) and one per reason present in the labels; columns ``n`` (labelled rows of the
    kind), ``detected`` (of those, dropped for any reason), ``exact`` (dropped for that very
    reason), ``recall`` (detected / n), ``recall_exact`` (exact / n), ``precision`` (for
    ``all``: truly invalid / dropped; per kind: labelled that kind / predicted that kind;
    NaN when nothing was predicted) and ``false_drops`` (valid rows dropped; ``all`` only).
    """
    lab = predicted["label"].to_list()
    pred = predicted["predicted"].to_list()
    invalid = [x != "valid" for x in lab]
    dropped = [p is not None for p in pred]
    tp = sum(i and d for i, d in zip(invalid, dropped))
    rows = [{"kind": "all", "n": sum(invalid), "detected": tp, "exact": sum(l_ == p for l_, p in zip(lab, pred)
                                                                            if l_ != "valid"),
             "recall": tp / sum(invalid) if any(invalid) else float("nan"),
             "precision": tp / sum(dropped) if any(dropped) else float("nan"),
             "false_drops": sum(d and not i for i, d in zip(invalid, dropped))}]
    rows[0]["recall_exact"] = rows[0]["exact"] / rows[0]["n"] if rows[0]["n"] else float("nan")
    for kind in [r for r in REASONS if r in lab]:
        n = sum(x == kind for x in lab)
        det = sum(x == kind and p is not None for x, p in zip(lab, pred))
        exact = sum(x == kind and p == kind for x, p in zip(lab, pred))
        npred = sum(p == kind for p in pred)
        rows.append({"kind": kind, "n": n, "detected": det, "exact": exact, "recall": det / n,
                     "recall_exact": exact / n, "precision": exact / npred if npred else float("nan"),
                     "false_drops": 0})
    return pl.DataFrame(rows).select("kind", "n", "detected", "exact", "recall", "recall_exact", "precision",
                                     "false_drops")


def measure_gate(judge_dir: str | Path | None, out: str | Path, labels: str | Path | None = None,
                 backend: Mapping[str, Any] | None = None, threshold: float = 0.5) -> dict[str, pl.DataFrame]:
    """Precision and recall of the gate on the labelled set, without and (``judge_dir``) with the judge.

    Writes ``<out>.predictions.csv`` (every labelled reply: its label, the reason predicted
    without and with the judge, the judge's calibrated probabilities) and ``<out>.csv``
    (:func:`gate_quality` per ``mode`` = deterministic | judge and ``split`` = all | dev |
    heldout). ``backend``: the judge's engine settings (default: transformers, from the schema).
    Returns the quality rows by mode.
    """
    from teachfit.io import write_csv

    table = load_gate_labels(labels)
    out = Path(out)
    results = {"deterministic": predict_labels(table, GateSettings.deterministic())}
    if judge_dir is not None:
        if backend is None:
            from teachfit.schema import defaults
            from teachfit.generation.engines import backend_settings

            backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
        settings = GateSettings(checks=list(OPTIONAL_CHECKS), judge=True, threshold=threshold, version=1)
        results["judge"] = predict_labels(table, settings, _judge_factory(judge_dir, backend, None))
    frames = []
    for mode, pred in results.items():
        for split in ("all", *SPLITS):
            sub = pred if split == "all" else pred.filter(pl.col("split") == split)
            frames.append(gate_quality(sub).with_columns(pl.lit(mode).alias("mode"), pl.lit(split).alias("split")))
    quality = pl.concat(frames, how="diagonal_relaxed")
    quality = quality.select("mode", "split", *[c for c in quality.columns if c not in ("mode", "split")])
    write_csv(quality, out.with_suffix(".csv"))
    joined = results["deterministic"].select("id", "split", "label", pl.col("predicted").alias("deterministic"))
    if "judge" in results:
        joined = joined.join(results["judge"].select("id", pl.col("predicted").alias("judge"), "p_request", "p_gain"),
                             on="id")
    write_csv(joined.join(table.select("id", "note"), on="id"), out.with_name(out.name + ".predictions.csv"))
    return {mode: quality.filter(pl.col("mode") == mode) for mode in results}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m teachfit.studies.evolver.gate --judge DIR --out STEM``: :func:`measure_gate`
    (``make gate-quality`` runs it with SmolLM2, the default config's evolver judge)."""
    import argparse

    ap = argparse.ArgumentParser(description="Precision and recall of the evolver validity gate on the "
                                             "project's labelled evolution replies.")
    ap.add_argument("--judge", default=None, help="judge model folder (omit: deterministic checks only)")
    ap.add_argument("--out", required=True, help="output stem: <stem>.csv and <stem>.predictions.csv")
    ap.add_argument("--labels", default=None, help="labelled JSONL (default: the package's own set)")
    ap.add_argument("--threshold", type=float, default=0.5, help="calibrated P(yes) below which the judge drops")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    tables = measure_gate(args.judge, args.out, labels=args.labels, threshold=args.threshold)
    with pl.Config(tbl_rows=50, tbl_cols=20):
        for mode, table in tables.items():
            print(f"--- {mode}\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
