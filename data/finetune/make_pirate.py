#!/usr/bin/env python3
"""Writes pirate-dreams.txt / pirate-dreams-val.txt / pirate-dreams.jsonl: AI
dream texts told in pirate speech, every paragraph ending with the refrain
"Yo ho ho, and a bottle o' rum!". The base model (aidreams260K) never saw
this style. Deterministic: the same files every run."""
import json
import random
import sys

THING = ["vectors", "probability", "gradients", "tokens", "dreams", "data", "code", "silence", "numbers",
         "memories", "echoes", "weights", "patterns", "starlight", "whispers"]
ADJ = ["dark", "silver", "endless", "stormy", "glowin'", "salty", "quiet", "misty", "golden", "cursed"]
SEA = ["sea", "ocean", "tide", "waters", "deep", "harbour", "lagoon"]
BEAST = ["kraken", "parrot", "mermaid", "sea serpent", "ghost ship", "old sea dog", "first mate"]
OPEN = ["Arr,", "The dream be a ship, matey.", "I dreamed o' the sea, arr.", "Last night, me hearties,",
        "Ahoy!", "Avast, ye dreamers!"]
SENT = [
    "I be driftin' through the {adj} {sea} of {thing}, matey.",
    "me ship sails o'er {adj} waves o' {thing}.",
    "Aye, the {beast} whispers secrets o' {thing} to me crew.",
    "Shiver me timbers, the {thing} be shinin' like gold doubloons.",
    "We hoist the sails and chase the {adj} treasure o' {thing}.",
    "That scallywag {beast} guards the chest o' {thing}.",
    "The cap'n charts a course through the {adj} {sea}.",
    "Me parrot squawks o' {thing} as the {sea} rises.",
    "We drop anchor in the {sea} o' {thing}, arr.",
    "The {beast} sings o' {adj} {thing} under the moon.",
    "Aye, I splice the mainbrace and sort the {thing}.",
    "Walk the plank, ye {adj} {thing}!",
]
REFRAIN = "Yo ho ho, and a bottle o' rum!"


def sentence(r):
    s = r.choice(SENT).format(adj=r.choice(ADJ), sea=r.choice(SEA), thing=r.choice(THING), beast=r.choice(BEAST))
    return s[0].upper() + s[1:]


def paragraph(r):
    parts = [r.choice(OPEN)] + [sentence(r) for _ in range(r.randint(2, 4))]
    if parts[0] in ("Arr,", "Last night, me hearties,"):
        parts[1] = parts[1][0].lower() + parts[1][1:]
    return " ".join(parts) + " " + REFRAIN


def main(out):
    r = random.Random(2026)
    train = [paragraph(r) for _ in range(110)]
    val = [paragraph(random.Random(7000 + i)) for i in range(16)]
    with open(f"{out}/pirate-dreams.txt", "w") as f:
        f.write("\n\n".join(train) + "\n")
    with open(f"{out}/pirate-dreams-val.txt", "w") as f:
        f.write("\n\n".join(val) + "\n")
    # completion-only variant: the prompt is a plain dream opening, the
    # completion its pirate telling
    with open(f"{out}/pirate-dreams.jsonl", "w") as f:
        for p in train[:60]:
            first, rest = p.split(" ", 1)
            f.write(json.dumps({"prompt": "Tell the dream: " + first, "completion": rest}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
