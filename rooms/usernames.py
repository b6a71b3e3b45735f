"""Usernames that look alike: Unicode confusables (homoglyphs) reduced to one skeleton.

Two usernames with one skeleton are told apart by no reader ("аlice" with a Cyrillic а,
"bob" and "b0b", "Ian" and "lan"), so the second is refused. The skeleton follows Unicode
TS #39: NFKC, each character mapped to the prototype of its confusable class (the data of
the confusable-homoglyphs package), then case folded and mapped again.
"""

from __future__ import annotations

import unicodedata
from functools import cache

from confusable_homoglyphs.confusables import confusables_data
from django.contrib.auth import get_user_model
from django.db.models.functions import Length

# Right-to-left marks the data wraps some characters in.
_MARKS = "\u200e\u200f"


@cache
def _prototypes() -> dict[str, str]:
    """character -> the prototype of its confusable class (single characters only)."""
    prototypes: dict[str, str] = {}
    for char, homoglyphs in confusables_data.items():
        if len(homoglyphs) != 1:
            continue  # a prototype lists all its confusables; a member lists its prototype
        target = homoglyphs[0]["c"].strip(_MARKS)
        if len(target) != 1 or len(char) != 1:
            continue
        back = confusables_data.get(target, [])
        if len(back) == 1 and back[0]["c"].strip(_MARKS) == char:
            target = min(char, target)  # two characters confusable only with each other
        prototypes[char] = target
    return prototypes


def skeleton(name: str) -> str:
    """What `name` looks like: equal skeletons, indistinguishable usernames."""
    prototypes = _prototypes()
    mapped = "".join(prototypes.get(c, c) for c in unicodedata.normalize("NFKC", name))
    return "".join(prototypes.get(c, c) for c in mapped.casefold())


def lookalike_of(name: str, exclude_pk: int | None = None) -> str | None:
    """The existing username `name` could be mistaken for, or None.

    Skeletons keep the length of NFKC text (only single characters are mapped), so only
    usernames of the same length are compared.
    """
    wanted = skeleton(name)
    normalized = unicodedata.normalize("NFKC", name)
    users = get_user_model().objects.annotate(length=Length("username"))
    candidates = users.filter(length=len(normalized))
    if exclude_pk is not None:
        candidates = candidates.exclude(pk=exclude_pk)
    for username in candidates.values_list("username", flat=True).iterator():
        if username != normalized and skeleton(username) == wanted:
            return username
    return None
