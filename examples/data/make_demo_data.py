"""Writes examples/data/demo.jsonl: small, deterministic, learnable text for the demo job.

Templated sentences (counting, colours of things, simple sums) so that a tiny model's loss falls
visibly within a few dozen LoRA steps. Run from the repository root; the output is committed.
"""
import json
import random

rng = random.Random(20261125)
things = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red",
          "sun": "yellow", "sea": "blue", "night": "dark", "milk": "white", "leaf": "green"}
numbers = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

lines = []
for _ in range(120):
    a, b = rng.randint(0, 5), rng.randint(0, 5)
    lines.append(f"{numbers[a]} plus {numbers[b]} is {numbers[a + b]}.")
for _ in range(120):
    thing = rng.choice(sorted(things))
    lines.append(f"The colour of the {thing} is {things[thing]}.")
for _ in range(60):
    start = rng.randint(0, 6)
    lines.append("Counting: " + ", ".join(numbers[start:start + 5]) + ".")
rng.shuffle(lines)

with open("examples/data/demo.jsonl", "w", encoding="utf-8") as f:
    for line in lines:
        f.write(json.dumps({"text": line}) + "\n")
