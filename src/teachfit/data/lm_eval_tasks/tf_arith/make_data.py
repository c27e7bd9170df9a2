"""Generate the tf_arith data (GSM8K format) deterministically.

Written for Teachfit; the word problems are produced by the templates below,
not copied from any data set. Each record has ``id``, ``question`` and
``answer``; the answer shows the worked steps and ends with ``#### <number>``
like GSM8K (without GSM8K's ``<<a*b=c>>`` calculator annotations). Half the
problems need one step, half two or three, so that 100M-scale models are not
all stuck at zero.

    python config/lm_eval_tasks/tf_arith/make_data.py   # rewrites the two JSONL files

The committed JSONL files are the data; ``tests/test_evaluate.py`` checks that
this script still reproduces them byte for byte. Changing a template or a seed
changes the data: bump ``metadata.version`` in tf_arith.yaml.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPLITS = {"test": (40, 20240), "train": (8, 7)}  # split -> (n items, seed)

PEOPLE = [("Mia", "she"), ("Omar", "he"), ("Lena", "she"), ("Ravi", "he"), ("Sofia", "she"),
          ("Tom", "he"), ("Aiko", "she"), ("Diego", "he"), ("Nora", "she"), ("Felix", "he")]
ITEMS = ["apples", "stickers", "marbles", "cookies", "pencils", "stamps"]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def t_packs(r: random.Random) -> tuple[str, list[str], int]:
    name, pr = r.choice(PEOPLE)
    item = r.choice(ITEMS)
    a, b, c = r.randint(3, 30), r.randint(2, 9), r.randint(3, 12)
    q = (f"{name} has {a} {item}. {_cap(pr)} buys {b} packs with {c} {item} in each pack. "
         f"How many {item} does {name} have now?")
    steps = [f"{name} buys {b} * {c} = {b * c} {item}.",
             f"{_cap(pr)} now has {a} + {b * c} = {a + b * c} {item}."]
    return q, steps, a + b * c


def t_change(r: random.Random) -> tuple[str, list[str], int]:
    name, pr = r.choice(PEOPLE)
    item = r.choice(["notebooks", "sandwiches", "tickets", "plants"])
    p, n = r.randint(2, 9), r.randint(2, 6)
    bill = r.choice([note for note in (20, 50, 100) if note > n * p])
    q = (f"A shop sells {item} for ${p} each. {name} buys {n} {item} and pays with a ${bill} note. "
         f"How much change, in dollars, does {pr} get?")
    steps = [f"The {item} cost {n} * {p} = {n * p} dollars.",
             f"The change is {bill} - {n * p} = {bill - n * p} dollars."]
    return q, steps, bill - n * p


def t_classes(r: random.Random) -> tuple[str, list[str], int]:
    k, s, x = r.randint(3, 12), r.randint(18, 32), r.randint(2, 15)
    q = (f"A school has {k} classes with {s} students in each class. {x} students are absent today. "
         f"How many students are present?")
    steps = [f"The school has {k} * {s} = {k * s} students.",
             f"Present today are {k * s} - {x} = {k * s - x} students."]
    return q, steps, k * s - x


def t_pages(r: random.Random) -> tuple[str, list[str], int]:
    name, pr = r.choice(PEOPLE)
    p, d, e = r.randint(5, 40), r.randint(3, 9), r.randint(10, 60)
    q = (f"{name} reads {p} pages every day for {d} days and then reads {e} more pages on the weekend. "
         f"How many pages does {pr} read in total?")
    steps = [f"On the weekdays {pr} reads {p} * {d} = {p * d} pages.",
             f"In total {pr} reads {p * d} + {e} = {p * d + e} pages."]
    return q, steps, p * d + e


def t_boxes(r: random.Random) -> tuple[str, list[str], int]:
    b, boxes, price = r.choice([6, 10, 12]), r.randint(4, 20), r.randint(2, 7)
    eggs = b * boxes
    q = (f"A farmer collects {eggs} eggs and packs them into boxes of {b}. "
         f"Each full box sells for ${price}. How many dollars does the farmer earn by selling all the boxes?")
    steps = [f"The farmer fills {eggs} / {b} = {boxes} boxes.",
             f"The boxes sell for {boxes} * {price} = {boxes * price} dollars."]
    return q, steps, boxes * price


def t_train(r: random.Random) -> tuple[str, list[str], int]:
    v, h, w = r.choice([40, 50, 60, 70, 80, 90]), r.randint(2, 6), r.randint(5, 95)
    q = (f"A train travels at {v} km per hour for {h} hours and then travels {w} more km. "
         f"How many km does it travel in total?")
    steps = [f"In {h} hours it travels {v} * {h} = {v * h} km.",
             f"In total it travels {v * h} + {w} = {v * h + w} km."]
    return q, steps, v * h + w


def t_savings(r: random.Random) -> tuple[str, list[str], int]:
    name, pr = r.choice(PEOPLE)
    s, w = r.randint(5, 25), r.randint(4, 12)
    t = r.randint(10, s * w - 5)
    q = (f"{name} saves ${s} every week. After {w} weeks {pr} spends ${t} on a gift. "
         f"How many dollars does {pr} have left?")
    steps = [f"After {w} weeks {pr} has {s} * {w} = {s * w} dollars.",
             f"After the gift {pr} has {s * w} - {t} = {s * w - t} dollars left."]
    return q, steps, s * w - t


def t_flour(r: random.Random) -> tuple[str, list[str], int]:
    g, c = r.choice([150, 200, 250, 300]), r.randint(2, 8)
    f = g * c + r.randint(1, 20) * 50
    q = (f"A cake needs {g} grams of flour. A baker has {f} grams of flour and bakes {c} cakes. "
         f"How many grams of flour are left?")
    steps = [f"The cakes use {g} * {c} = {g * c} grams of flour.",
             f"Left over are {f} - {g * c} = {f - g * c} grams."]
    return q, steps, f - g * c


def t_chairs(r: random.Random) -> tuple[str, list[str], int]:
    rows, per = r.randint(4, 15), r.randint(6, 14)
    people = r.randint(5, rows * per - 1)
    q = (f"A hall has {rows} rows of chairs with {per} chairs in each row. {people} people sit down, "
         f"one per chair. How many chairs are still empty?")
    steps = [f"The hall has {rows} * {per} = {rows * per} chairs.",
             f"Empty chairs: {rows * per} - {people} = {rows * per - people}."]
    return q, steps, rows * per - people


def t_shopping(r: random.Random) -> tuple[str, list[str], int]:
    name, pr = r.choice(PEOPLE)
    n, p, m, c = r.randint(2, 6), r.randint(2, 9), r.randint(2, 8), r.randint(1, 4)
    q = (f"{name} buys {n} notebooks at ${p} each and {m} pens at ${c} each. "
         f"How many dollars does {pr} spend in total?")
    steps = [f"The notebooks cost {n} * {p} = {n * p} dollars.",
             f"The pens cost {m} * {c} = {m * c} dollars.",
             f"In total {pr} spends {n * p} + {m * c} = {n * p + m * c} dollars."]
    return q, steps, n * p + m * c


def o_more(r: random.Random) -> tuple[str, list[str], int]:
    name, pr = r.choice(PEOPLE)
    item = r.choice(ITEMS)
    a, b = r.randint(3, 40), r.randint(2, 30)
    q = f"{name} has {a} {item}. {_cap(pr)} gets {b} more. How many {item} does {name} have now?"
    return q, [f"{name} now has {a} + {b} = {a + b} {item}."], a + b


def o_bus(r: random.Random) -> tuple[str, list[str], int]:
    a = r.randint(12, 60)
    b = r.randint(2, a - 1)
    q = (f"A bus has {a} passengers. At a stop, {b} passengers get off. "
         f"How many passengers are still on the bus?")
    return q, [f"Still on the bus are {a} - {b} = {a - b} passengers."], a - b


def o_boxes(r: random.Random) -> tuple[str, list[str], int]:
    item = r.choice(ITEMS)
    b, n = r.randint(3, 12), r.randint(2, 9)
    q = f"A box holds {b} {item}. How many {item} are in {n} boxes?"
    return q, [f"{n} boxes hold {n} * {b} = {n * b} {item}."], n * b


def o_share(r: random.Random) -> tuple[str, list[str], int]:
    name, _ = r.choice(PEOPLE)
    k, each = r.randint(2, 8), r.randint(2, 12)
    q = (f"{name} shares {k * each} sweets equally among {k} friends. "
         f"How many sweets does each friend get?")
    return q, [f"Each friend gets {k * each} / {k} = {each} sweets."], each


def o_age(r: random.Random) -> tuple[str, list[str], int]:
    name, _ = r.choice(PEOPLE)
    a, b = r.randint(5, 40), r.randint(2, 15)
    q = f"{name} is {a} years old. {name}'s sister is {b} years older. How old is {name}'s sister?"
    return q, [f"{name}'s sister is {a} + {b} = {a + b} years old."], a + b


Template = Callable[[random.Random], tuple[str, list[str], int]]
ONE_STEP: list[Template] = [o_more, o_bus, o_boxes, o_share, o_age]
MULTI_STEP: list[Template] = [
    t_packs, t_change, t_classes, t_pages, t_boxes, t_train, t_savings, t_flour, t_chairs, t_shopping,
]


def _template(i: int) -> Template:
    """Alternate one-step and multi-step templates, cycling through each list."""
    group = ONE_STEP if i % 2 == 0 else MULTI_STEP
    return group[(i // 2) % len(group)]


def generate(split: str, exclude: set[str] = frozenset()) -> list[dict]:
    """``n`` problems for ``split``, alternating one- and multi-step templates; questions in
    ``exclude`` (the other split) are skipped, so train and test never overlap."""
    n, seed = SPLITS[split]
    rng = random.Random(seed)
    records: list[dict] = []
    seen = set(exclude)
    i = 0
    while len(records) < n:
        template = _template(i)
        i += 1
        question, steps, result = template(rng)
        if question in seen:
            continue
        seen.add(question)
        answer = "\n".join(steps) + f"\n#### {result}"
        records.append({"id": f"tf_arith-{split}-{len(records):03d}", "question": question,
                        "answer": answer})
    return records


def render(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def build() -> dict[str, str]:
    """File name -> JSONL text for both splits."""
    train = generate("train")
    test = generate("test", exclude={r["question"] for r in train})
    return {"tf_arith_train.jsonl": render(train), "tf_arith_test.jsonl": render(test)}


if __name__ == "__main__":
    for name, text in build().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
