"""Benchmark: batched scoring (teachfit.scoring.losses) vs the per-example naive reference.

Scores 64 realistic (instruction, response) pairs (written below; responses of
roughly 10–200 tokens) with a real small model (SmolLM2-135M-Instruct by
default), checks that both paths agree to 1e-4 relative on every loss, and
reports the speed ratio (target ≥ 3×). The model is loaded once and the pairs
are tokenized once; only the scoring computation is timed (one warm-up pass
each, then the two paths alternate; best of ``--repeats``).

    python benchmarks/bench_scoring.py --model-dir /tmp/conv/smol --out results/benchmarks/bench_scoring.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

PAIRS: list[tuple[str, str]] = [
    ("What is the capital of France?", "The capital of France is Paris, which is also its largest city."),
    ("Give me a synonym for 'happy'.", "Joyful. Other close synonyms are cheerful, glad and content."),
    ("Translate 'good morning' into Spanish.", "'Good morning' in Spanish is 'buenos días'."),
    ("What is 17 times 3?", "17 times 3 is 51."),
    ("Name three primary colors.", "The three primary colors are red, blue, and yellow."),
    ("Is a tomato a fruit or a vegetable?",
     "Botanically, a tomato is a fruit because it develops from the flower and contains seeds. "
     "In cooking, however, it is usually treated as a vegetable because of its savory flavor."),
    ("Write a haiku about autumn leaves.",
     "Crimson leaves drifting,\nwhispering to the cold ground,\nsummer says goodbye."),
    ("Explain what a prime number is.",
     "A prime number is a whole number greater than 1 whose only divisors are 1 and itself. "
     "For example, 2, 3, 5, 7 and 11 are prime, while 9 is not because it is divisible by 3."),
    ("Summarize the plot of Romeo and Juliet in two sentences.",
     "Two young lovers from feuding families in Verona secretly marry despite their families' hatred. "
     "A chain of misunderstandings leads both of them to take their own lives, which finally reconciles "
     "the two houses."),
    ("Write a Python function that returns the factorial of n.",
     "```python\ndef factorial(n: int) -> int:\n    if n < 0:\n        raise ValueError(\"n must be "
     "non-negative\")\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return "
     "result\n```\nThe loop multiplies all integers from 2 to n, and factorial(0) returns 1."),
    ("How many days are in a leap year?", "A leap year has 366 days instead of the usual 365, because February gets a 29th day."),
    ("What does HTML stand for?", "HTML stands for HyperText Markup Language, the standard language of web pages."),
    ("Give two tips for better sleep.",
     "1. Keep a regular schedule: go to bed and wake up at the same time every day, even on weekends.\n"
     "2. Avoid screens for an hour before bed, since blue light and stimulating content delay sleep."),
    ("Why is the sky blue?",
     "Sunlight contains all visible colors. When it passes through the atmosphere, the short blue "
     "wavelengths are scattered by air molecules much more strongly than the long red wavelengths "
     "(Rayleigh scattering). This scattered blue light reaches our eyes from every direction, so the "
     "sky looks blue. At sunset the light travels through more air, most blue is scattered away, and "
     "the sky turns orange and red."),
    ("Convert 100 degrees Fahrenheit to Celsius.",
     "C = (F - 32) × 5/9 = (100 - 32) × 5/9 = 68 × 5/9 ≈ 37.8 °C."),
    ("List the planets of the solar system in order from the sun.",
     "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, and Neptune."),
    ("Write a short apology email for missing a meeting.",
     "Subject: Apologies for missing today's meeting\n\nHi Sarah,\n\nI'm sorry I missed our meeting "
     "this morning. An urgent issue with a client came up and I lost track of time. I have read the "
     "notes you shared and will follow up on my action items by Thursday. Could we find fifteen "
     "minutes tomorrow to go over anything I should know?\n\nBest regards,\nDaniel"),
    ("What is the boiling point of water at sea level?",
     "Water boils at 100 °C (212 °F) at sea level."),
    ("Define photosynthesis in one sentence.",
     "Photosynthesis is the process by which plants, algae and some bacteria use light energy to "
     "turn carbon dioxide and water into glucose and oxygen."),
    ("Which is larger, 0.7 or 0.65?", "0.7 is larger than 0.65, because 0.70 > 0.65."),
    ("Suggest a name for a coffee shop.", "\"The Daily Grind\": short, memorable, and a play on grinding coffee beans."),
    ("Explain the difference between a list and a tuple in Python.",
     "Both store ordered sequences of items, but a list is mutable and a tuple is immutable. You can "
     "append, remove or change elements of a list after creating it, while a tuple cannot be changed. "
     "Tuples are therefore hashable (if their items are) and can be used as dictionary keys, and they "
     "are slightly faster and use less memory. Use a list for collections that change and a tuple for "
     "fixed records such as coordinates (x, y)."),
    ("Solve for x: 2x + 6 = 14.", "Subtract 6 from both sides: 2x = 8. Divide by 2: x = 4."),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen wrote 'Pride and Prejudice', published in 1813."),
    ("Give me a recipe for a simple vinaigrette.",
     "Ingredients: 3 tablespoons olive oil, 1 tablespoon vinegar (red wine or balsamic), 1 teaspoon "
     "Dijon mustard, a pinch of salt and pepper, and optionally 1 teaspoon honey.\n\nSteps: whisk the "
     "vinegar, mustard, salt, pepper and honey in a small bowl, then slowly pour in the oil while "
     "whisking until the dressing is smooth. Taste and adjust the seasoning. It keeps in the fridge "
     "for about a week; shake before use."),
    ("What is the plural of 'mouse'?", "The plural of 'mouse' is 'mice'."),
    ("Describe the water cycle.",
     "The water cycle is the continuous movement of water on Earth. The sun heats oceans, lakes and "
     "rivers, and water evaporates into the air as vapor; plants also release vapor through "
     "transpiration. As the vapor rises it cools and condenses into tiny droplets that form clouds. "
     "When the droplets grow heavy they fall as precipitation: rain, snow, sleet or hail. The water "
     "then collects in bodies of water, soaks into the ground to become groundwater, or runs off over "
     "land back to rivers and the sea, where the cycle begins again."),
    ("Rewrite this sentence in the passive voice: 'The cat chased the mouse.'",
     "In the passive voice the sentence becomes: 'The mouse was chased by the cat.'"),
    ("What are the main causes of inflation?",
     "Inflation usually has three main causes. Demand-pull inflation happens when total demand grows "
     "faster than the economy can produce goods and services. Cost-push inflation happens when "
     "production costs such as wages, energy or raw materials rise and firms pass them on as higher "
     "prices. Built-in inflation comes from expectations: workers ask for higher wages because they "
     "expect prices to rise, and firms raise prices to cover those wages. Growth of the money supply "
     "can feed all three."),
    ("How do I reverse a string in JavaScript?",
     "Split it into characters, reverse the array and join it again:\n```javascript\nconst reversed "
     "= str.split('').reverse().join('');\n```\nFor strings with emoji or other multi-unit characters "
     "use `[...str].reverse().join('')`."),
    ("What is the square root of 144?", "The square root of 144 is 12, because 12 × 12 = 144."),
    ("Tell me a fun fact about octopuses.",
     "Octopuses have three hearts and blue blood: two hearts pump blood through the gills and the "
     "third pumps it to the rest of the body."),
    ("Write a limerick about a cat who loves to nap.",
     "There once was a cat named Lenore,\nwho napped on the rug by the door.\nShe'd stretch and she'd "
     "yawn\nfrom the dusk to the dawn,\nthen wake up and nap a bit more."),
    ("Explain recursion to a ten-year-old.",
     "Recursion is when something is defined using a smaller copy of itself. Imagine a stack of "
     "Russian dolls: to find the smallest doll, you open a doll and then do the exact same thing with "
     "the doll inside, again and again, until you reach a doll that doesn't open. That last doll is the "
     "'stopping point'. In programming, a recursive function solves a big problem by calling itself "
     "on a smaller piece of the problem, until the piece is so small that the answer is obvious."),
    ("What year did World War II end?", "World War II ended in 1945: in Europe on 8 May and in Asia on 2 September."),
    ("Classify the sentiment of this review: 'The food was cold and the service was slow.'",
     "Negative: the reviewer complains about both the food and the service."),
    ("Give three benefits of regular exercise.",
     "Regular exercise strengthens the heart and lungs, helps control body weight, and improves mood "
     "and sleep by reducing stress and anxiety."),
    ("Write a SQL query that counts the orders per customer.",
     "```sql\nSELECT customer_id, COUNT(*) AS n_orders\nFROM orders\nGROUP BY customer_id\nORDER BY "
     "n_orders DESC;\n```"),
    ("What is the difference between weather and climate?",
     "Weather is the state of the atmosphere at a particular place and time: today's temperature, "
     "rain or wind. Climate is the average pattern of weather in a region over a long period, "
     "typically 30 years or more. In short, weather is what you get on a given day and climate is "
     "what you expect over many years."),
    ("Name a mammal that can fly.", "The bat is the only mammal capable of true flight."),
    ("Proofread: 'Their going to the park tomorow.'", "Corrected: 'They're going to the park tomorrow.' (they're = they are; tomorrow has two r's)"),
    ("Explain how a bill becomes a law in the United States.",
     "A bill is introduced in either the House of Representatives or the Senate and sent to a "
     "committee, which studies it, may hold hearings and amend it, and then votes on whether to send it "
     "to the full chamber. The chamber debates the bill, may amend it further, and votes. If it passes, "
     "it goes to the other chamber, which repeats the process. If the two chambers pass different "
     "versions, a conference committee works out a single text that both must approve. The final bill "
     "goes to the President, who can sign it into law or veto it. Congress can override a veto with a "
     "two-thirds vote in both chambers. If the President does nothing for ten days while Congress is in "
     "session, the bill becomes law without a signature. If Congress adjourns during those ten days, however, "
     "the unsigned bill dies, which is called a pocket veto. Finally, the courts may later review the "
     "law and strike it down if they find that it violates the Constitution."),
    ("What is 15% of 80?", "15% of 80 is 0.15 × 80 = 12."),
    ("Recommend a book for someone who likes science fiction.",
     "Try 'The Left Hand of Darkness' by Ursula K. Le Guin: a thoughtful classic about an envoy on a "
     "planet whose people have no fixed gender, with excellent world-building and politics."),
    ("What is an API?",
     "An API (Application Programming Interface) is a set of rules that lets one piece of software "
     "request data or services from another, without knowing how the other is built internally."),
    ("Write a motivational quote.", "\"Small steps every day add up to big results.\""),
    ("Explain the rules of tic-tac-toe.",
     "Two players take turns marking empty squares in a 3×3 grid, one with X and the other with O. The "
     "first player to place three of their marks in a horizontal, vertical or diagonal row wins. If all "
     "nine squares are filled and no one has three in a row, the game is a draw."),
    ("Sort these numbers in ascending order: 42, 7, 19, 3, 88.", "3, 7, 19, 42, 88."),
    ("What causes earthquakes?",
     "Most earthquakes happen when stress builds up along faults, the boundaries between pieces of "
     "the Earth's crust called tectonic plates. The plates are always slowly moving, but friction "
     "locks their edges together. When the stress overcomes the friction, the rocks slip suddenly and "
     "release energy as seismic waves that shake the ground. Volcanic activity and human activities "
     "such as mining or injecting fluids underground can also trigger smaller earthquakes."),
    ("Write a function in C that swaps two integers.",
     "```c\nvoid swap(int *a, int *b) {\n    int tmp = *a;\n    *a = *b;\n    *b = tmp;\n}\n```\nCall "
     "it with the addresses of the variables: `swap(&x, &y);`."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au, from the Latin word aurum."),
    ("How can I improve my public speaking?",
     "Practice out loud several times, ideally in front of a friend or a camera, so the structure "
     "feels natural. Know your opening and closing by heart. Speak more slowly than feels normal and "
     "pause after key points. Make eye contact with a few friendly faces. Use notes with keywords "
     "rather than a full script. Finally, treat nervousness as energy: a few deep breaths before you "
     "begin help a lot."),
    ("Give an example of a metaphor.", "\"Time is a thief\" is a metaphor: it says time steals from us."),
    ("Explain what machine learning is.",
     "Machine learning is a branch of artificial intelligence in which computers learn patterns from "
     "data instead of following hand-written rules. A model is shown many examples, for instance "
     "emails labeled as spam or not spam, and it adjusts its internal parameters to make better "
     "predictions. Once trained, it can make predictions on new data it has never seen. Common types "
     "are supervised learning (learning from labeled examples), unsupervised learning (finding "
     "structure in unlabeled data) and reinforcement learning (learning by trial and error from "
     "rewards)."),
    ("What is the longest river in the world?",
     "The Nile, at about 6,650 km, is usually cited as the longest river, although some measurements "
     "put the Amazon slightly ahead."),
    ("Create a to-do list for moving to a new apartment.",
     "1. Give notice to your current landlord.\n2. Book movers or rent a van.\n3. Collect boxes, tape "
     "and markers.\n4. Declutter and donate what you don't need.\n5. Pack room by room and label the "
     "boxes.\n6. Change your address at the post office, bank and employer.\n7. Set up internet and "
     "utilities at the new place.\n8. Clean the old apartment and take photos for the deposit.\n9. "
     "Unpack essentials first: bed, toiletries, kitchen basics."),
    ("Translate 'thank you very much' into German.", "'Thank you very much' in German is 'Vielen Dank' (or, more warmly, 'Vielen herzlichen Dank')."),
    ("What is the Pythagorean theorem?",
     "In a right triangle, the square of the hypotenuse equals the sum of the squares of the other "
     "two sides: a² + b² = c²."),
    ("Write a tweet announcing a new bakery opening.",
     "Fresh bread, warm croissants and the best cinnamon rolls in town! 🥐 Our bakery opens this "
     "Saturday at 8 am on Main Street. First 50 customers get a free coffee. See you there! #bakery"),
    ("Why do we have seasons?",
     "Seasons happen because the Earth's axis is tilted by about 23.5 degrees. As the Earth orbits the "
     "sun, each hemisphere spends part of the year tilted toward the sun, receiving more direct sunlight "
     "and longer days (summer), and part of the year tilted away, with weaker sunlight and shorter days "
     "(winter). The distance from the sun changes only slightly and is not the cause."),
    ("Compare cats and dogs as pets.",
     "Cats are independent, need less space and attention, and are happy in small apartments; they use "
     "a litter box and do not need walks. Dogs are more social and loyal, need daily walks, training "
     "and company, and suit active people or families with more time and space. Cats generally cost "
     "less; dogs offer more companionship and activity. The best choice depends on your lifestyle, "
     "schedule and home."),
    ("Fix the bug: `for i in range(10) print(i)`",
     "The loop header is missing a colon and the body must be on its own indented line:\n```python\n"
     "for i in range(10):\n    print(i)\n```"),
    ("What is the speed of light?", "About 299,792 kilometers per second in a vacuum."),
    ("Describe your ideal weekend in three sentences.",
     "I would start Saturday with a long breakfast and a walk in the park. In the afternoon I'd read "
     "a good novel and cook dinner with friends. Sunday would be for a hike in the hills and an early "
     "night."),
]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="results/models/smollm2")
    ap.add_argument("--out", default=None, help="JSON file for the results (printed anyway)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--target", type=float, default=3.0)
    ap.add_argument("--convention", default="chat", help="scoring convention (teachfit.scoring.losses.CONVENTIONS)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from teachfit.schema import defaults
    from teachfit.models import LogitHead
    from teachfit.scoring.losses import (
        ScoringSettings,
        convention_settings,
        encode_pairs,
        load_scoring_model,
        score_encoded,
        score_encoded_naive,
    )

    torch.set_num_threads(args.threads)
    settings = ScoringSettings.from_dict({**convention_settings(defaults("scoring"), args.convention),
                                          "batch_tokens": args.batch_tokens})
    model, tok = load_scoring_model(args.model_dir, settings.dtype)
    assert len(PAIRS) == 64, len(PAIRS)
    encoded = encode_pairs(tok, [q for q, _ in PAIRS], [a for _, a in PAIRS], settings)
    n_resp = [e.a_span[1] - e.a_span[0] for e in encoded]
    head = LogitHead(model)

    def run_batched():
        return score_encoded(model, tok, encoded, settings, head=head)

    def run_naive():
        return score_encoded_naive(model, encoded)

    # arithmetic of each path (linear layers only: 2 FLOPs per weight per token): how much of
    # the ratio comes from doing less work and how much from doing it faster
    from teachfit.scoring.losses import shared_prefix_len

    emb = model.get_input_embeddings().weight
    head_params = int(model.get_output_embeddings().weight.numel())
    body_params = sum(int(p.numel()) for p in model.get_decoder().parameters() if p is not emb)
    k = shared_prefix_len(encoded)
    naive_tok = sum(e.prompt_len + len(e.joint) + len(e.alone) for e in encoded)
    batched_tok = k + sum(len(e.joint) - k + len(e.alone) for e in encoded)
    batched_head = sum((e.q_span[1] - e.q_span[0]) + 2 * (e.a_span[1] - e.a_span[0]) for e in encoded)
    naive_flops = 2 * naive_tok * (body_params + head_params)
    batched_flops = 2 * (batched_tok * body_params + batched_head * head_params)

    # warm-up, then alternate the two paths (the machine may be shared: best of repeats)
    fast, slow = run_batched(), run_naive()
    batched_s = naive_s = math.inf
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fast = run_batched()
        batched_s = min(batched_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        slow = run_naive()
        naive_s = min(naive_s, time.perf_counter() - t0)
    rel = []
    for col in ("loss_q", "loss_a_given_q", "loss_a"):
        a, b = fast[col].to_numpy(), slow[col].to_numpy()
        rel.append(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))
    max_rel_err = float(np.max(np.concatenate(rel)))
    ratio = naive_s / batched_s
    result = {
        "model_dir": str(args.model_dir),
        "convention": settings.convention,
        "n_pairs": len(PAIRS),
        "response_tokens_min": int(min(n_resp)),
        "response_tokens_max": int(max(n_resp)),
        "threads": args.threads,
        "batch_tokens": args.batch_tokens,
        "device": str(model.device),
        "head_split": head.split,
        "batched_s": round(batched_s, 4),
        "naive_s": round(naive_s, 4),
        "ratio": round(ratio, 3),
        "naive_tokens": naive_tok,
        "batched_tokens": batched_tok,
        "batched_head_positions": batched_head,
        "shared_prefix_tokens": k,
        "work_ratio": round(naive_flops / batched_flops, 3),
        "naive_gflop_s": round(naive_flops / naive_s / 1e9, 1),
        "batched_gflop_s": round(batched_flops / batched_s / 1e9, 1),
        "max_rel_err": max_rel_err,
        "target": args.target,
        "passed": bool(ratio >= args.target and max_rel_err <= 1e-4),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from teachfit.io import write_json

        write_json(result, Path(args.out))
    return result


if __name__ == "__main__":
    main()
