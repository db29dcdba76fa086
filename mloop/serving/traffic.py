"""Canary and shadow routing: which served version answers a request.

The versions being served live in :class:`Slots` and are swapped by one reference assignment
(atomic in Python), so a request keeps the version it started with.
"""

from __future__ import annotations

import hashlib
import random

from mloop.serving.predictor import Predictor

__all__ = ["Slots", "choose"]


class Slots:
    """The versions being served, swapped by assignment (atomic in Python)."""

    def __init__(self) -> None:
        self.production: Predictor | None = None
        self.canary: Predictor | None = None
        self.shadow: Predictor | None = None
        self.last_error: str | None = None


def choose(slots: Slots, fraction: float, key: str | None) -> tuple[str, Predictor]:
    """``(role, predictor)`` for one request: the canary for ``fraction`` of traffic, else production.

    With a request key the choice is sticky (a hash of the key), so one caller always sees one model.
    """
    canary, production = slots.canary, slots.production
    assert production is not None
    if canary is None or fraction <= 0:
        return "production", production
    if key is not None:
        u = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
    else:
        u = random.random()
    return ("canary", canary) if u < fraction else ("production", production)
