"""Speaker identification and verification evaluation.

* Identification: top-1 accuracy of the speaker classifier's scores (VoxCeleb1 iden_split).
* Verification: each trial ``(label, enroll, test)`` is scored by the cosine similarity of
  the two utterances' embeddings; EER and minDCF follow (VoxCeleb1-O, ``veri_test.txt``).
  Adaptive symmetric score normalisation (AS-norm, Matějka et al., 2017) against a cohort of
  embeddings is available and off by default (``cohort=None``).

Example:
    >>> import torch
    >>> embeddings = {"a1": torch.tensor([1.0, 0.0]), "a2": torch.tensor([0.9, 0.1]),
    ...               "b1": torch.tensor([0.0, 1.0])}
    >>> trials = [Trial(1, "a1", "a2"), Trial(0, "a1", "b1"), Trial(0, "a2", "b1")]
    >>> result = verification_eer(embeddings, trials)
    >>> result["eer"], result["num_trials"]
    (0.0, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from speechssl.tasks.metrics import eer_and_mindcf, top1_accuracy

__all__ = [
    "Trial",
    "collect_outputs",
    "cosine_scores",
    "identification_accuracy",
    "read_trials",
    "score_trials",
    "verification_eer",
]


class Trial(NamedTuple):
    """One verification trial: ``label`` 1 = same speaker, 0 = different."""

    label: int
    enroll: str
    test: str


def read_trials(path: str | Path) -> list[Trial]:
    """Read a VoxCeleb-style trial list: ``"1 id10270/x6uYqmx31kE/00001.wav id10270/..."``."""
    trials = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise ValueError(f"{path}:{number}: expected '<0|1> <enroll> <test>', got {line!r}")
        trials.append(Trial(int(fields[0]), fields[1], fields[2]))
    return trials


@torch.no_grad()
def collect_outputs(
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: Iterable,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run ``function(wav, lengths) -> (B, ...)`` over a loader of collated batches.

    Returns ``(outputs (N, ...), indices (N,), labels (N,) or None)`` on the CPU in manifest
    order (sorted by ``batch.indices``), whatever order the sampler used.

    Example: ``embeddings, indices, _ = collect_outputs(model.embed, loader)``.
    """
    outputs, indices, labels = [], [], []
    for batch in loader:
        if len(batch) == 0:
            continue
        batch = batch.to(device)
        outputs.append(function(batch.wav, batch.lengths).float().cpu())
        indices.append(batch.indices.cpu())
        if batch.labels is not None:
            labels.append(batch.labels.cpu())
    if not outputs:
        raise ValueError("the loader produced no utterance")
    indices = torch.cat(indices)
    order = torch.argsort(indices)
    gathered_labels = torch.cat(labels)[order] if len(labels) == len(outputs) else None
    return torch.cat(outputs)[order], indices[order], gathered_labels


def identification_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``{"top1": accuracy, "num_utterances": N}`` of speaker scores ``(N, num_speakers)``."""
    return {"top1": top1_accuracy(scores, labels), "num_utterances": len(labels)}


def cosine_scores(enroll: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of ``(N, E)`` and ``(N, E)`` -> ``(N,)``."""
    return F.cosine_similarity(enroll.float(), test.float(), dim=-1)


def _lookup(embeddings: Mapping[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    missing = [key for key in keys if key not in embeddings]
    if missing:
        raise ValueError(f"{len(missing)} trial utterances have no embedding, e.g. {missing[0]!r}")
    return torch.stack([torch.as_tensor(embeddings[key]).detach().float().cpu() for key in keys])


def _adaptive_snorm(
    scores: torch.Tensor,
    enroll: torch.Tensor,
    test: torch.Tensor,
    cohort: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """AS-norm: each side's score against its ``top_k`` closest cohort embeddings gives
    that side's mean and std; the trial score is the mean of the two z-normalised scores."""
    cohort = F.normalize(cohort.float(), dim=-1)
    top_k = min(top_k, cohort.size(0))
    normalised = []
    for side in (enroll, test):
        # (N, E) @ (E, K) -> (N, K) cosine with every cohort embedding; keep the top_k largest
        against_cohort = F.normalize(side, dim=-1) @ cohort.T
        closest = against_cohort.topk(top_k, dim=1).values
        mean, std = closest.mean(dim=1), closest.std(dim=1).clamp(min=1e-6)
        normalised.append((scores - mean) / std)
    return (normalised[0] + normalised[1]) / 2


def score_trials(
    embeddings: Mapping[str, torch.Tensor],
    trials: Sequence[Trial],
    cohort: torch.Tensor | None = None,
    top_k: int = 300,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores ``(N,)`` and labels ``(N,)`` of ``trials`` given ``{utterance: (E,)}``.

    Args:
        cohort: ``(M, E)`` embeddings of speakers outside the trials (usually training
            speakers) for adaptive s-norm; ``None`` (default) = raw cosine scores.
        top_k: cohort size kept per side in adaptive s-norm.
    """
    if not trials:
        raise ValueError("no trials to score")
    enroll = _lookup(embeddings, [trial.enroll for trial in trials])
    test = _lookup(embeddings, [trial.test for trial in trials])
    scores = cosine_scores(enroll, test)
    if cohort is not None:
        if cohort.dim() != 2 or cohort.size(0) < 2 or cohort.size(1) != enroll.size(1):
            raise ValueError(
                f"cohort must be (M >= 2, {enroll.size(1)}), got {tuple(cohort.shape)}"
            )
        scores = _adaptive_snorm(scores, enroll, test, cohort.detach().cpu(), top_k)
    labels = torch.tensor([int(trial.label) for trial in trials], dtype=torch.int64)
    return scores, labels


def verification_eer(
    embeddings: Mapping[str, torch.Tensor],
    trials: Sequence[Trial],
    cohort: torch.Tensor | None = None,
    top_k: int = 300,
    p_target: float = 0.01,
) -> dict[str, float]:
    """Score ``trials`` (see :func:`score_trials`) and return EER / minDCF (see
    :func:`~speechssl.tasks.metrics.eer_and_mindcf`) plus ``num_trials``."""
    scores, labels = score_trials(embeddings, trials, cohort=cohort, top_k=top_k)
    result = eer_and_mindcf(scores, labels, p_target=p_target)
    result["num_trials"] = len(trials)
    return result
