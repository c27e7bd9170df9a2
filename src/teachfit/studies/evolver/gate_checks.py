"""The validity gate's text checks: word lists, patterns, settings and the verdict on one reply.

:func:`check_instruction` runs the deterministic instruction checks of one evolver reply and
:func:`response_failure` the response checks of one teacher answer; the rules that apply them to
a round (:mod:`teachfit.studies.evolver.gate`) give a reply at most one reason: the first failing
check in :data:`INSTRUCTION_REASONS` order, then :data:`RESPONSE_REASONS`. Where these checks
cannot decide, they leave an open question for the judge (:mod:`teachfit.studies.evolver.gate_judge`).

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
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from teachfit.settings import from_dict as settings_from_dict
from teachfit.studies.evolver.evolve import MARKER_RE, parse_auto_evol, parse_evolved

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
    body = MARKER_RE.sub(" ", text, count=1)
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
    ``duplicate`` needs the other replies of the round and is decided by
    :func:`teachfit.studies.evolver.gate.gate_replies`.
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
