"""One rule for seeds, from a request to its caption and back.

Every seed is in `0 ≤ seed < SEED_LIMIT` (2³²): random when the user names none, `first, first+1, …` for
several images, and best-of candidates are derived in the same range. So the seed a caption shows can always
be typed back (`seed:1234`) and makes the same picture: a request that names its seed gets exactly that seed
(no best-of candidates that could replace it).
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["SEED_LIMIT", "candidate_seeds", "request_seeds"]

SEED_LIMIT = 2**32


def request_seeds(count: int, first: int | None = None) -> tuple[int, ...]:
    """The seeds of a request of `count` images: from `first` (the user's `seed:`) on, else random."""
    if first is not None and not 0 <= first < SEED_LIMIT:
        raise ValueError(f"a seed is 0..{SEED_LIMIT - 1}, got {first}")
    start = secrets.randbelow(SEED_LIMIT) if first is None else first
    return tuple((start + i) % SEED_LIMIT for i in range(count))


def candidate_seeds(seeds: tuple[int, ...], n: int, *, attempt: int) -> tuple[int, ...]:
    """`n` candidate seeds per asked seed, derived from the asked ones so the same request repeats itself.

    The first try starts with the asked seeds themselves (best-of-1 is the plain request); further candidates
    and the retry's are hashed from (asked seeds, try, index) into the same range as every other seed.
    """
    if n == 1 and attempt == 1:
        return seeds
    base = list(seeds) if attempt == 1 else []
    salt = ",".join(map(str, seeds))
    derived = [
        int.from_bytes(hashlib.blake2b(f"{salt}|{attempt}|{i}".encode(), digest_size=8).digest(), "big") % SEED_LIMIT
        for i in range(len(seeds) * n - len(base))
    ]
    return tuple(base + derived)
