"""Small, locally generated tasks that show what a distillation method transfers.

Entity tracking (circuit distillation, seed 003): the box format of Kim & Schuster (2023)
as used by Prakash et al. (2024) to find an entity-tracking circuit::

    Box F contains the apple, Box Q contains the key and Box A contains the cup. Box F contains the
    -> " apple"

(or Prakash et al.'s "The apple is in Box F, ..." with ``template="is_in"``, or
``template="adjacent"``: "Box F apple, Box Q key and Box A cup. Box F" -> " apple", each
object right after its box label and the query ending on the label, the associative-recall
layout a 2-layer attention model learns in a few hundred steps; with "contains" the label
sits three tokens before its object and small models stay on the copy-an-object plateau,
BENCHMARKS.md "A teacher that binds").

3-5 boxes, single-token objects and box labels (checked against every tokenizer that will
see the task), the answer is the next token after the final one. Everything is a pure
function of the seed, so a split is reproducible and splits drawn with different seeds
are independent samples of the task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bbi.errors import BbiError

OBJECTS = [
    "apple",
    "book",
    "cup",
    "key",
    "ball",
    "hat",
    "pen",
    "map",
    "coin",
    "ring",
    "shoe",
    "card",
    "bell",
    "lamp",
    "fork",
    "bag",
    "sock",
    "toy",
    "egg",
    "fish",
    "bird",
    "car",
    "watch",
    "bottle",
    "phone",
    "plate",
    "rock",
    "leaf",
    "stone",
    "chair",
    "table",
    "bread",
    "milk",
    "tea",
    "shirt",
    "coat",
    "doll",
    "kite",
    "drum",
    "flag",
    "glass",
    "knife",
    "spoon",
    "bowl",
    "clock",
    "mirror",
    "pencil",
    "brush",
]
BOX_LABELS = tuple("ABCDEFGHJKLMNPQRSTUVWXYZ")
TEMPLATES = {
    "contains": "Box {b} contains the {o}",
    "is_in": "the {o} is in Box {b}",
    "adjacent": "Box {b} {o}",
}
# What a prompt ends with: the answer is the next token, the queried box's object.
QUERIES = {"contains": "Box {b} contains the", "is_in": "Box {b} contains the",
           "adjacent": "Box {b}"}  # fmt: skip


@dataclass(frozen=True)
class EntityExample:
    """One prompt; ``answer`` is the object in the queried box (with its leading space);
    ``placements`` maps every box of the context to its object."""

    prompt: str
    answer: str
    query_box: str
    n_boxes: int
    placements: tuple[tuple[str, str], ...] = ()


def single_token_words(words: list[str] | tuple[str, ...], tokenizers: list[Any]) -> list[str]:
    """The words that are one token (with a leading space) for every tokenizer."""
    return [
        w
        for w in words
        if all(len(t.encode(" " + w, add_special_tokens=False)) == 1 for t in tokenizers)
    ]


def entity_vocabulary(tokenizers: list[Any], min_objects: int = 8) -> tuple[list[str], list[str]]:
    """(objects, box labels) usable by every tokenizer; too few is a user error."""
    objects = single_token_words(OBJECTS, tokenizers)
    boxes = single_token_words(BOX_LABELS, tokenizers)
    if len(objects) < min_objects or len(boxes) < 5:
        raise BbiError(
            f"entity tracking needs >= {min_objects} single-token objects and 5 box labels "
            f"for these tokenizers (found {len(objects)} and {len(boxes)})"
        )
    return objects, boxes


def entity_tracking(
    n: int,
    seed: int | str,
    objects: list[str],
    boxes: list[str],
    min_boxes: int = 3,
    max_boxes: int = 5,
    template: str = "contains",
) -> list[EntityExample]:
    """``n`` prompts: distinct objects in distinct boxes, a uniformly random box queried.

    ``template``: ``contains`` (Kim & Schuster: "Box F contains the apple, ...") or
    ``is_in`` (Prakash et al.: "The apple is in Box F, ..."), both queried with
    "Box F contains the"; or ``adjacent`` ("Box F apple, ...", queried with "Box F").
    """
    if template not in TEMPLATES:
        raise BbiError(f"entity template must be one of {', '.join(TEMPLATES)}")
    if not 2 <= min_boxes <= max_boxes <= min(len(objects), len(boxes)):
        raise BbiError(f"boxes: need 2 <= {min_boxes} <= {max_boxes} <= available objects/boxes")
    rng = random.Random(f"entity-tracking:{seed}")
    out = []
    for _ in range(n):
        k = rng.randint(min_boxes, max_boxes)
        objs = rng.sample(objects, k)
        labels = rng.sample(boxes, k)
        fmt = TEMPLATES[template]
        parts = [fmt.format(o=o, b=b) for o, b in zip(objs, labels, strict=True)]
        text = ", ".join(parts[:-1]) + " and " + parts[-1]
        q = rng.randrange(k)
        prompt = f"{text[0].upper()}{text[1:]}. " + QUERIES[template].format(b=labels[q])
        placements = tuple(zip(labels, objs, strict=True))
        out.append(EntityExample(prompt, " " + objs[q], labels[q], k, placements))
    return out


def entity_recall_sequences(
    n: int,
    seed: int | str,
    objects: list[str],
    boxes: list[str],
    min_boxes: int = 3,
    max_boxes: int = 5,
    template: str = "contains",
    queries: int = 4,
) -> list[list[tuple[str, bool]]]:
    """Training sequences with ``queries`` queries each, as (text, is_answer) segments:
    the prompt of one example, its answer, then the query of another random box
    ("Box Q contains the", or "Box Q" with ``adjacent``) + its answer again for
    further random boxes. Every answer is a supervised token, so a sequence teaches
    ``queries`` times what a single-query prompt teaches once (tuning a small teacher
    needs the denser signal); the first query is exactly a single-query prompt."""
    rng = random.Random(f"entity-recall:{seed}")
    out = []
    for ex in entity_tracking(n, seed, objects, boxes, min_boxes, max_boxes, template):
        placed = dict(ex.placements)
        segs = [(ex.prompt, False), (ex.answer, True)]
        for _ in range(queries - 1):
            b = rng.choice(sorted(placed))
            segs += [(". " + QUERIES[template].format(b=b), False), (" " + placed[b], True)]
        out.append(segs)
    return out


__all__ = [
    "BOX_LABELS",
    "OBJECTS",
    "QUERIES",
    "TEMPLATES",
    "EntityExample",
    "entity_recall_sequences",
    "entity_tracking",
    "entity_vocabulary",
    "single_token_words",
]
