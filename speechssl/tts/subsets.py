"""Nested, seeded pre-training subsets: fraction 1/8 is inside 1/4, inside 1/2, inside 1.

Every subset is a prefix of one seeded ranking of the utterances, so nesting holds by
construction and the same ``seed`` always gives the same subsets. The ranking:

1. speakers are sorted by name and shuffled with ``random.Random(f"{seed}:speakers")``;
2. each speaker's utterances are sorted by id and shuffled with
   ``random.Random(f"{seed}:{speaker}")`` (string seeds are hashed with SHA-512 by Python,
   so this does not depend on ``PYTHONHASHSEED``);
3. ``mode="round_robin"`` (default): the ranking takes the 1st utterance of every speaker in
   speaker order, then every speaker's 2nd, and so on (speakers with fewer utterances drop
   out), so a small fraction keeps as many speakers as it can with fewer utterances each;
   ``mode="speakers"``: whole speakers one after another, so a fraction keeps fewer speakers
   with all their utterances.

A fraction ``f`` keeps the first ``max(1, round(f * N))`` utterances of the ranking; ``f = 0``
keeps none (no pre-training).

Example:
    >>> utterances = [(f"s{s}_{u}", f"s{s}") for s in range(4) for u in range(4)]
    >>> subsets = nested_fractions(utterances, fractions=(0, 0.25, 0.5, 1), seed=0)
    >>> [len(subsets[f]) for f in (0, 0.25, 0.5, 1)]
    [0, 4, 8, 16]
    >>> len({uid.split("_")[0] for uid in subsets[0.25]})  # one utterance of each speaker
    4
    >>> set(subsets[0.25]) <= set(subsets[0.5]) <= set(subsets[1])
    True
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence

__all__ = ["nested_fractions", "ranked_utterances"]


def ranked_utterances(
    utterances: Iterable[tuple[str, str]], seed: int = 0, mode: str = "round_robin"
) -> list[str]:
    """The seeded ranking of utterance ids whose prefixes are the subsets (steps 1-3 above)."""
    if mode not in ("round_robin", "speakers"):
        raise ValueError(f"mode must be 'round_robin' or 'speakers', got {mode!r}")
    by_speaker: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for utterance_id, speaker in utterances:
        if utterance_id in seen:
            raise ValueError(f"utterance id {utterance_id!r} appears twice")
        seen.add(utterance_id)
        by_speaker[str(speaker)].append(str(utterance_id))
    speakers = sorted(by_speaker)
    random.Random(f"{seed}:speakers").shuffle(speakers)
    queues = []
    for speaker in speakers:
        queue = sorted(by_speaker[speaker])
        random.Random(f"{seed}:{speaker}").shuffle(queue)
        queues.append(queue)
    if mode == "speakers":
        return [utterance_id for queue in queues for utterance_id in queue]
    longest = max((len(queue) for queue in queues), default=0)
    return [queue[rank] for rank in range(longest) for queue in queues if rank < len(queue)]


def nested_fractions(
    utterances: Sequence[tuple[str, str]],
    fractions: Sequence[float] = (0.125, 0.25, 0.5, 1.0),
    seed: int = 0,
    mode: str = "round_robin",
) -> dict[float, list[str]]:
    """``{fraction: [utterance ids]}``, nested and deterministic; see the module docstring.

    Args:
        utterances: ``(id, speaker)`` pairs of the pre-training pool.
        fractions: values in ``[0, 1]``; 0 gives an empty list.
        seed: the ranking's seed.
        mode: ``"round_robin"`` (speakers then utterances) or ``"speakers"`` (whole speakers).
    """
    for fraction in fractions:
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"fractions must lie in [0, 1], got {fraction}")
    ranking = ranked_utterances(utterances, seed, mode)
    subsets = {}
    for fraction in fractions:
        count = 0 if fraction == 0 else max(1, round(float(fraction) * len(ranking)))
        subsets[fraction] = ranking[:count]
    return subsets
