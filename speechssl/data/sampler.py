"""Duration-bucketed, DDP-sharded, resumable batch sampler.

Batches are sized by *padded* seconds: a batch of ``B`` utterances whose longest lasts
``d_max`` seconds (after the dataset's crop, ``max_duration``) costs ``B * d_max``, and
that stays within ``max_batch_seconds``.

How an epoch is built (identically on every rank, from ``seed`` and the epoch):

1. Utterances are sorted by duration once and cut into ``num_buckets`` buckets of equal
   count, so the durations in a bucket are close and padding is small.
2. Each bucket is shuffled, then cut into batches of ``floor(max_batch_seconds / d)``
   utterances, ``d`` being the bucket's longest duration (at most ``max_batch_size``). The
   batch count of an epoch therefore does not depend on the shuffle: ``len()`` is the same
   in every epoch.
3. All batches are shuffled together.
4. Sharding: rank ``r`` of ``R`` takes batches ``r, r + R, r + 2R, ...``. When the batch
   count is not a multiple of ``R``:

   - ``drop_last=False`` (default): the batch with the most utterances is split in two
     halves (each still within the budget) until the count is a multiple of ``R``. Every
     utterance is then seen exactly once per epoch across the ranks, and every rank has
     the same number of batches. Only when there are fewer utterances than ranks are
     batches repeated (the first ones, in order) to fill the last round.
   - ``drop_last=True``: the last ``count mod R`` batches of the shuffled order are
     dropped (different ones each epoch).

An utterance longer than ``max_batch_seconds`` (with no crop to shorten it) gets a batch
of its own: it cannot be split, and dropping it silently would be worse.

Resuming (lhotse-style): :meth:`state_dict` records the epoch and how many batches this
rank has consumed; a sampler given that state by :meth:`load_state_dict` yields exactly
the remaining batches of that epoch on its next iteration. With a ``DataLoader`` the
sampler runs ahead of the training loop by the prefetched batches, so pass the count the
loop really consumed: ``sampler.state_dict(batches_consumed=step_in_epoch)``.

Example:
    >>> import numpy as np
    >>> durations = np.array([1.0, 1.1, 4.0, 4.2, 9.0, 1.2], dtype=np.float32)
    >>> sampler = DurationBucketSampler(durations, max_batch_seconds=9.0, num_buckets=3, seed=0)
    >>> batches = list(sampler)
    >>> sorted(i for batch in batches for i in batch)
    [0, 1, 2, 3, 4, 5]
    >>> all(len(b) * durations[b].max() <= 9.0 for b in batches)
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["DurationBucketSampler", "padding_waste"]


def padding_waste(durations: np.ndarray, batches: Sequence[Sequence[int]]) -> float:
    """Fraction of padded samples: ``1 - sum(d) / sum(B * max(d))`` over the batches.

    Args:
        durations: ``(N,)`` seconds (after any crop) of every utterance.
        batches: lists of indices into ``durations``.
    """
    durations = np.asarray(durations, dtype=np.float64)
    speech = padded = 0.0
    for batch in batches:
        values = durations[np.asarray(batch, dtype=np.int64)]
        if len(values):
            speech += values.sum()
            padded += len(values) * values.max()
    return 1.0 - speech / padded if padded > 0 else 0.0


class DurationBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Batch sampler of index lists bounded by padded seconds (see the module docstring).

    Args:
        durations: ``(N,)`` seconds per utterance, e.g. ``manifest.durations``.
        max_batch_seconds: budget of ``B * longest`` per batch.
        num_buckets: equal-count duration buckets (more buckets: less padding, more
            partial batches).
        shuffle: shuffle within buckets and the batch order (per epoch, from ``seed``).
        seed: base seed, the same on every rank.
        num_replicas, rank: DDP world size and rank; by default from ``torch.distributed``
            when it is initialised, else 1 and 0.
        drop_last: see the module docstring.
        max_batch_size: cap on utterances per batch.
        max_duration: the dataset's crop length in seconds; durations are capped at it.

    Use ``DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)`` and call
    :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        durations: np.ndarray,
        max_batch_seconds: float,
        num_buckets: int = 20,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        max_batch_size: int | None = None,
        max_duration: float | None = None,
    ) -> None:
        durations = np.asarray(durations, dtype=np.float64).reshape(-1)
        if len(durations) == 0:
            raise ValueError("DurationBucketSampler needs at least one utterance")
        if not np.isfinite(durations).all() or (durations <= 0).any():
            raise ValueError("durations must be positive finite seconds")
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if max_duration is not None:
            durations = np.minimum(durations, max_duration)
        self.durations = durations
        self.max_batch_seconds = float(max_batch_seconds)
        self.num_buckets = min(num_buckets, len(durations))
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.max_batch_size = max_batch_size
        self.epoch = 0
        # Equal-count buckets over the sorted durations, fixed for the whole run.
        order = np.argsort(durations, kind="stable")
        self._buckets = np.array_split(order, self.num_buckets)
        self._bucket_batch_sizes = [self._batch_size(durations[b].max()) for b in self._buckets]
        self._resume_position = 0  # batches to skip on the next iteration (after a resume)
        self._position = 0  # batches yielded in the current iteration
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _batch_size(self, longest: float) -> int:
        size = max(1, int(self.max_batch_seconds // longest))
        while size > 1 and size * longest > self.max_batch_seconds:  # float rounding of //
            size -= 1
        return min(size, self.max_batch_size) if self.max_batch_size else size

    # ------------------------------------------------------------------------ epoch plan
    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """All ranks' batches of ``epoch`` (default: the current one), in shard order."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        generator = np.random.default_rng((self.seed, epoch))
        batches: list[np.ndarray] = []
        for bucket, size in zip(self._buckets, self._bucket_batch_sizes, strict=True):
            members = generator.permutation(bucket) if self.shuffle else bucket
            batches.extend(np.split(members, range(size, len(members), size)))
        if self.shuffle:
            batches = [batches[i] for i in generator.permutation(len(batches))]
        batches = self._make_divisible(batches)
        self._cache = (epoch, batches)
        return batches

    def _make_divisible(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        remainder = len(batches) % self.num_replicas
        if remainder == 0:
            return batches
        if self.drop_last:
            return batches[: len(batches) - remainder]
        batches = list(batches)
        while len(batches) % self.num_replicas:
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            if len(batches[largest]) < 2:
                # Fewer utterances than ranks: repeat the first batches to fill the round.
                missing = self.num_replicas - len(batches) % self.num_replicas
                return batches + [batches[i % len(batches)] for i in range(missing)]
            half = len(batches[largest]) // 2
            # The second half goes right after the first so the shard order stays mixed.
            batches[largest : largest + 1] = [batches[largest][:half], batches[largest][half:]]
        return batches

    def rank_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches of ``epoch``, in the order they are yielded."""
        return self.global_batches(epoch)[self.rank :: self.num_replicas]

    # -------------------------------------------------------------------------- protocol
    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``'s shuffle; a pending resume is kept only for the same epoch."""
        if epoch != self.epoch:
            self._resume_position = 0
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches of this rank in a full epoch (equal on every rank)."""
        return len(self.global_batches()) // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        start, self._resume_position = self._resume_position, 0
        self._position = start
        for batch in batches[start:]:
            self._position += 1
            yield batch.tolist()

    def state_dict(self, batches_consumed: int | None = None) -> dict:
        """Where this rank stands: epoch and batches consumed in it (default: yielded)."""
        position = self._position if batches_consumed is None else int(batches_consumed)
        return {
            "epoch": self.epoch,
            "batches_consumed": position,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "num_utterances": len(self.durations),
            "max_batch_seconds": self.max_batch_seconds,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the next iteration yields the unseen batches of its epoch.

        Raises:
            ValueError: the state was saved with another world size, seed, corpus or budget
                (the remaining batches would not be the same).
        """
        for key in ("seed", "num_replicas", "num_utterances", "max_batch_seconds", "drop_last"):
            mine = self.state_dict()[key]
            if state.get(key, mine) != mine:
                raise ValueError(f"sampler state has {key}={state[key]!r}, this sampler {mine!r}")
        self.epoch = int(state["epoch"])
        self._resume_position = int(state["batches_consumed"])
        self._position = self._resume_position

    # ---------------------------------------------------------------------------- report
    def padding_waste(self, epoch: int | None = None) -> float:
        """Fraction of padded samples over all ranks' batches of ``epoch``."""
        return padding_waste(self.durations, self.global_batches(epoch))
