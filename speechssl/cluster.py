"""k-means on the device: the HuBERT targets.

HuBERT's first iteration clusters 39-dim MFCC frames (13 + deltas + delta-deltas, 100 Hz)
into 100 classes; later iterations cluster hidden features (50 Hz) into 500 classes.
fairseq does this with ``sklearn.cluster.MiniBatchKMeans`` on the CPU; :class:`KMeans`
here does the same job with torch on CUDA when there is one, else on the CPU's torch
threads, and reaches a lower inertia in far less time (``benchmarks/kmeans.py``).

Written by hand because scikit-learn's k-means runs on the CPU only, and neither torch
nor torchaudio ships a k-means.

A pure algorithm on tensors: it reads no manifest and decodes no audio. Turning a corpus
into features, fitting on the training split and labelling every split is
:mod:`speechssl.targets`.

How it fits (``algorithm="lloyd"``, the default):

1. the fit data is a sample of at most ``max_fit_frames`` frames: all of a tensor that
   small, a uniform sample without replacement of a larger tensor, or a reservoir sample
   (Vitter's algorithm R) of an iterable of ``(n_i, D)`` chunks, so a stream of features
   that would never fit in memory can be clustered; an iterable with no more frames than
   ``max_fit_frames`` gives exactly the tensor it concatenates to, and so the same fit;
2. k-means++ with greedy local trials (``2 + log k`` candidates a step, as scikit-learn)
   on a random subsample of ``init_size`` frames, refined there by Lloyd at ``tol / 10``;
   ``n_init`` times, keeping the refined centers with the lowest subsample inertia
   (iterations on the subsample are cheap, and Lloyd's tail on 1e5+ frames creeps by
   0.05% an iteration for dozens of iterations);
3. full-batch Lloyd iterations over the whole sample from there, until an iteration
   improves the inertia by less than ``tol`` (relative) or ``max_iter`` is reached.

``algorithm="minibatch"`` instead runs Sculley-style mini-batch updates (each center moves
towards its batch mean with step ``n_batch / n_seen``): over shuffled batches of a tensor,
or straight over the chunks of an iterable without holding them (one pass for a
generator, ``max_iter`` passes for a re-iterable such as a list).

Empty clusters: after a Lloyd step, a center that received no frame is moved onto the
sample frame farthest from its nearest center (as scikit-learn does), one empty center at
a time, taking the frames just moved into account (farthest-first), so that several empty
centers spread out instead of piling onto one region's outliers; in mini-batch mode, a
center no frame has reached by the end of a pass is moved the same way onto frames of the
last batch.

Distances use ``||x||^2 - 2 x.c + ||c||^2`` with one matmul per chunk of rows, so memory
stays bounded by ``chunk_size x n_clusters`` floats; ``inertia_`` and :meth:`KMeans.inertia`
recompute the winner's distance exactly as ``||x - c||^2``, since the expansion loses
precision when the norms are large (MFCC c0), while Lloyd's convergence test makes do with
the expansion. Everything is float32 with
float64 accumulators. Fits are seeded and deterministic on the CPU (on CUDA, ``index_add_``
uses atomics, so sums may differ in the last bits).

Example:
    >>> import torch
    >>> from speechssl.cluster import KMeans
    >>> _ = torch.manual_seed(0)
    >>> blobs = torch.randn(3, 1, 2) * 10 + torch.randn(3, 200, 2)  # 3 blobs of 200 points
    >>> frames = blobs.reshape(-1, 2)  # (3, 200, 2) -> (600, 2)
    >>> kmeans = KMeans(3, device="cpu", seed=0).fit(frames)
    >>> labels = kmeans.predict(frames)
    >>> labels.shape, labels.dtype
    (torch.Size([600]), torch.int64)
    >>> len(set(labels.tolist()))
    3
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable

import numpy as np
import torch

from speechssl.safe_io import load_torch_file, save_torch_atomic

__all__ = ["KMeans", "kmeans_plusplus"]

logger = logging.getLogger(__name__)


_FILE_FORMAT = "speechssl.kmeans"
_FILE_VERSION = 1
# Entries of the (chunk, n_clusters) distance matrix held at once: 8 MiB on the CPU stays in
# cache (measured faster than larger chunks), 256 MiB on a GPU fills it with work.
_CPU_DISTANCE_BUDGET = 2**21
_CUDA_DISTANCE_BUDGET = 2**26
# predict/inertia move frames to the device this many rows at a time.
_TRANSFER_ROWS = 2**20


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_frames(features, name: str = "X") -> torch.Tensor:
    """Check a ``(N, D)`` array or tensor and return it as a float32 tensor (no copy if possible)."""
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        # speechssl's contract: every kind of bad input is a one-line ValueError.
        raise ValueError(  # noqa: TRY004
            f"{name} must be a (N, D) tensor or ndarray, got {type(features).__name__}"
        )
    if features.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(features.shape)}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(features.shape)}")
    if features.is_complex() or features.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued, got dtype {features.dtype}")
    features = features.detach().to(torch.float32)
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return features


def _squared_distances(
    points: torch.Tensor,
    centers: torch.Tensor,
    point_norms: torch.Tensor,
    center_norms: torch.Tensor,
) -> torch.Tensor:
    """``(n, D), (K, D) -> (n, K)`` squared distances by ``||x||^2 - 2 x.c + ||c||^2``."""
    distances = torch.addmm(center_norms, points, (-2.0 * centers).T)
    distances += point_norms.unsqueeze(1)
    return distances.clamp_(min=0.0)


def _reseed_farthest(
    centers: torch.Tensor, empty: torch.Tensor, points: torch.Tensor, distances: torch.Tensor
) -> None:
    """Move each empty center, in turn, onto the point farthest from every center so far.

    Farthest-first one at a time (updating the distances after each move), so several empty
    centers spread over the data instead of all landing on the outliers of one region.
    """
    distances = distances.clone()
    for index in empty.tolist():
        farthest = int(torch.argmax(distances))
        centers[index] = points[farthest]
        distances = torch.minimum(distances, (points - points[farthest]).pow(2).sum(dim=1))


def kmeans_plusplus(
    points: torch.Tensor,
    n_clusters: int,
    generator: torch.Generator,
    num_local_trials: int | None = None,
) -> tuple[torch.Tensor, float]:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii, 2007; local trials as scikit-learn).

    Each step draws ``num_local_trials`` (default ``2 + int(log k)``) candidates with
    probability proportional to the squared distance to the nearest chosen center and
    keeps the one that lowers the total the most.

    Args:
        points: ``(n, D)`` float32 on the working device.
        n_clusters: number of centers ``K <= n``.
        generator: a CPU ``torch.Generator`` (the draws are made on the CPU for determinism).

    Returns:
        ``(centers (K, D), inertia)`` where inertia is the seeding's sum of squared distances.
    """
    num_points = points.shape[0]
    if num_local_trials is None:
        num_local_trials = 2 + int(math.log(n_clusters))
    point_norms = points.pow(2).sum(dim=1)
    centers = torch.empty(n_clusters, points.shape[1], dtype=points.dtype, device=points.device)

    first = int(torch.randint(num_points, (1,), generator=generator))
    centers[0] = points[first]
    closest = _squared_distances(points, centers[:1], point_norms, point_norms[first : first + 1])
    closest = closest.squeeze(1)  # (n, 1) -> (n,)
    potential = float(closest.double().sum())
    for index in range(1, n_clusters):
        # Inverse-CDF sampling in float64, since float32 cumulative sums drift over 1e5 terms.
        cumulative = closest.double().cumsum(0).cpu()
        draws = torch.rand(num_local_trials, generator=generator, dtype=torch.float64) * potential
        candidates = torch.searchsorted(cumulative, draws).clamp_(max=num_points - 1)
        candidates = candidates.to(points.device)
        # (trials, n) layout: a short-by-long matmul runs ~3x faster than (n, trials) on CPU.
        to_candidates = torch.addmm(
            point_norms.unsqueeze(0), -2.0 * points[candidates], points.T
        )  # (trials, D) @ (D, n) -> (trials, n)
        to_candidates += point_norms[candidates].unsqueeze(1)
        candidate_closest = torch.minimum(closest.unsqueeze(0), to_candidates.clamp_(min=0.0))
        candidate_potentials = candidate_closest.double().sum(dim=1)
        best = int(torch.argmin(candidate_potentials))
        potential = float(candidate_potentials[best])
        closest = candidate_closest[best].contiguous()
        centers[index] = points[candidates[best]]
    return centers, potential


class KMeans:
    """k-means with k-means++ seeding and Lloyd or mini-batch updates, on CUDA or CPU threads.

    Args:
        n_clusters: number of clusters (HuBERT: 100 on MFCC, 500 on hidden features).
        algorithm: ``"lloyd"`` (full-batch on a sample of ``max_fit_frames``) or
            ``"minibatch"`` (Sculley updates; for streams that should not be sampled).
        max_iter: Lloyd iterations, or mini-batch passes over the data.
        tol: stop when an iteration improves the inertia by less than ``tol`` (relative);
            the subsample refinement uses ``tol / 10``; ``0`` runs to a fixed point or
            ``max_iter``.
        n_init: seedings (k-means++ + Lloyd on a fresh init subsample) to try; the best one
            is refined on all frames.
        init_size: frames the seeding and first refinement run on; default
            ``min(N, max(30_000, 50 * K))``
            (scikit-learn's MiniBatchKMeans seeds on ``3 * batch_size = 30_000``).
        max_fit_frames: Lloyd fits on at most this many frames (sampled, see the module doc).
        batch_size: mini-batch size (``algorithm="minibatch"`` only; fairseq: 10_000).
        chunk_size: rows per distance matmul; default keeps ``chunk x K`` near 2M floats
            on the CPU, 64M on CUDA.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        seed: seeds sampling and seeding; a fit on the CPU is reproducible.

    Attributes (after :meth:`fit` or :meth:`load`):
        cluster_centers_: ``(K, D)`` float32 on ``device``.
        inertia_: sum of squared distances of the fit frames to their nearest center
            (like scikit-learn's, over the sample that was fit; ``None`` after mini-batch
            fits of a stream, which never hold the data).
        n_iter_: Lloyd iterations on the whole sample, or mini-batch passes, run.
    """

    def __init__(
        self,
        n_clusters: int,
        *,
        algorithm: str = "lloyd",
        max_iter: int = 100,
        tol: float = 1e-3,
        n_init: int = 1,
        init_size: int | None = None,
        max_fit_frames: int = 1_000_000,
        batch_size: int = 10_000,
        chunk_size: int | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
    ) -> None:
        if not isinstance(n_clusters, int) or n_clusters < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
        if algorithm not in ("lloyd", "minibatch"):
            raise ValueError(f"algorithm must be 'lloyd' or 'minibatch', got {algorithm!r}")
        for name, value in (("max_iter", max_iter), ("n_init", n_init), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_fit_frames < n_clusters:
            raise ValueError(f"max_fit_frames ({max_fit_frames}) < n_clusters ({n_clusters})")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        self.n_clusters = n_clusters
        self.algorithm = algorithm
        self.max_iter = max_iter
        self.tol = float(tol)
        self.n_init = n_init
        self.init_size = init_size
        self.max_fit_frames = int(max_fit_frames)
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.device = _resolve_device(device)
        self.seed = int(seed)
        self.cluster_centers_: torch.Tensor | None = None
        self.inertia_: float | None = None
        self.n_iter_ = 0

    # ------------------------------------------------------------------ fitting
    def fit(self, features) -> KMeans:
        """Fit on a ``(N, D)`` tensor/ndarray or an iterable of ``(n_i, D)`` chunks.

        Raises:
            ValueError: wrong shape, NaN/inf, fewer frames than ``n_clusters``,
                chunks of differing ``D``.
        """
        generator = torch.Generator().manual_seed(self.seed)
        if isinstance(features, (torch.Tensor, np.ndarray)):
            features = _as_frames(features)
            if self.algorithm == "minibatch":
                return self._fit_minibatch_tensor(features, generator)
            sample = features
            if features.shape[0] > self.max_fit_frames:
                keep = torch.randperm(features.shape[0], generator=generator)[: self.max_fit_frames]
                sample = features[keep.sort().values]
        elif isinstance(features, Iterable) and not isinstance(features, (str, bytes)):
            if self.algorithm == "minibatch":
                return self._fit_minibatch_stream(features, generator)
            sample = self._reservoir_sample(features, generator)
        else:
            raise ValueError(  # noqa: TRY004 (bad input is a ValueError throughout speechssl)
                f"fit expects a (N, D) tensor/ndarray or an iterable of chunks, "
                f"got {type(features).__name__}"
            )
        self._check_enough(sample.shape[0])
        self._fit_lloyd(sample.to(self.device), generator)
        return self

    def _check_enough(self, num_frames: int) -> None:
        if num_frames < self.n_clusters:
            raise ValueError(f"n_clusters ({self.n_clusters}) > number of frames ({num_frames})")

    def _reservoir_sample(self, chunks: Iterable, generator: torch.Generator) -> torch.Tensor:
        """Algorithm R over chunks: a uniform sample of ``max_fit_frames`` rows, in one pass."""
        capacity = self.max_fit_frames
        pending: list[torch.Tensor] = []
        reservoir: torch.Tensor | None = None
        seen = 0
        dimension = None
        for index, chunk in enumerate(chunks):
            chunk = _as_frames(chunk, name=f"chunk {index}")
            if dimension is None:
                dimension = chunk.shape[1]
            elif chunk.shape[1] != dimension:
                raise ValueError(
                    f"chunk {index} has D={chunk.shape[1]}, earlier chunks D={dimension}"
                )
            if reservoir is None:
                room = capacity - seen
                pending.append(chunk[:room])
                seen_before, seen = seen, seen + chunk.shape[0]
                if seen < capacity:
                    continue
                reservoir = torch.cat(pending)
                pending = []
                chunk = chunk[room:]
                seen_before = capacity
            else:
                seen_before, seen = seen, seen + chunk.shape[0]
            if chunk.shape[0] == 0:
                continue
            # Row i (0-based over the stream) replaces slot j ~ U{0..i} when j < capacity.
            positions = torch.arange(seen_before, seen_before + chunk.shape[0], dtype=torch.float64)
            slots = (
                torch.rand(chunk.shape[0], generator=generator, dtype=torch.float64)
                * (positions + 1)
            ).long()
            chosen = (slots < capacity).nonzero().squeeze(1)
            if chosen.numel() == 0:
                continue
            # Within a chunk a later row wins a slot drawn twice, as in the sequential algorithm.
            reversed_slots = slots[chosen].flip(0).numpy()
            _, first_in_reversed = np.unique(reversed_slots, return_index=True)
            winners = chosen.flip(0)[torch.from_numpy(first_in_reversed)]
            reservoir[slots[winners]] = chunk[winners]
        if reservoir is None:
            if not pending:
                raise ValueError("fit received an empty iterable of chunks")
            reservoir = torch.cat(pending)
        return reservoir

    def _default_chunk(self, num_rows: int) -> int:
        if self.chunk_size is not None:
            return max(1, int(self.chunk_size))
        budget = _CUDA_DISTANCE_BUDGET if self.device.type == "cuda" else _CPU_DISTANCE_BUDGET
        return max(1024, min(num_rows, budget // self.n_clusters))

    def _assign(
        self,
        points: torch.Tensor,
        centers: torch.Tensor,
        exact: bool = True,
        sums: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest center: ``(N, D) -> labels (N,) int64, squared distances (N,) float32``.

        ``exact=False`` returns the expansion's distances (enough for a convergence test);
        ``sums`` (``(K, D)`` float64), when given, receives the per-center sums of the points,
        chunk by chunk, so a Lloyd step needs one pass and no float64 copy of the data.
        """
        chunk_size = self._default_chunk(points.shape[0])
        center_norms = centers.pow(2).sum(dim=1)
        # -2 folded into a contiguous (D, K) copy: addmm with a 1-D bias and no alpha runs
        # twice as fast as with a broadcast (1, K) bias and alpha=-2 (measured on the CPU).
        scaled_centers = (-2.0 * centers).T.contiguous()
        labels = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
        distances = torch.empty(points.shape[0], dtype=torch.float32, device=points.device)
        for start in range(0, points.shape[0], chunk_size):
            chunk = points[start : start + chunk_size]
            # ||x||^2 does not change the argmin, so it is added to the minima only.
            scores = torch.addmm(center_norms, chunk, scaled_centers)  # (n, K)
            chunk_distances, chunk_labels = scores.min(dim=1)
            labels[start : start + chunk_size] = chunk_labels
            if exact:
                # ||x - c||^2 for the winner: the expansion cancels badly for large norms.
                chunk_distances = (chunk - centers[chunk_labels]).pow(2).sum(dim=1)
            else:
                chunk_distances = (chunk_distances + chunk.pow(2).sum(dim=1)).clamp_(min=0.0)
            distances[start : start + chunk_size] = chunk_distances
            if sums is not None:
                # float32 within a chunk, float64 across chunks: 1e6-frame float32 sums lose digits.
                chunk_sums = torch.zeros_like(centers).index_add_(0, chunk_labels, chunk)
                sums += chunk_sums
        return labels, distances

    def _init_size(self, num_frames: int) -> int:
        init_size = self.init_size or max(30_000, 50 * self.n_clusters)
        return max(self.n_clusters, min(num_frames, init_size))

    def _subsample(self, sample: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``init_size`` rows of the sample (all of it if smaller), on the device."""
        num_frames, init_size = sample.shape[0], self._init_size(sample.shape[0])
        if init_size >= num_frames:
            return sample.to(self.device)
        rows = torch.randperm(num_frames, generator=generator)[:init_size].to(sample.device)
        return sample[rows].to(self.device)

    def _seed(self, sample: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Best of ``n_init`` k-means++ seedings, each on an ``init_size`` subsample."""
        best_centers, best_potential = None, math.inf
        for _ in range(self.n_init):
            centers, potential = kmeans_plusplus(
                self._subsample(sample, generator), self.n_clusters, generator
            )
            if potential < best_potential:
                best_centers, best_potential = centers, potential
        return best_centers

    def _lloyd(
        self, sample: torch.Tensor, centers: torch.Tensor, tol: float
    ) -> tuple[torch.Tensor, float, int]:
        """Full-batch Lloyd from ``centers``; returns the centers, the inertia of the last
        assignment (of the centers before the last update) and the iterations run."""
        previous_inertia = inertia = math.inf
        iteration = 0
        for iteration in range(1, self.max_iter + 1):
            sums = torch.zeros(centers.shape, dtype=torch.float64, device=sample.device)
            labels, distances = self._assign(sample, centers, exact=False, sums=sums)
            inertia = float(distances.double().sum())
            counts = torch.bincount(labels, minlength=self.n_clusters)
            filled = counts > 0
            centers = centers.clone()
            centers[filled] = (sums[filled] / counts[filled].unsqueeze(1)).float()
            empty = (~filled).nonzero().squeeze(1)
            if empty.numel() > 0:
                _reseed_farthest(centers, empty, sample, distances)
            logger.debug(
                "k-means iteration %d: inertia %.6g, %d empty", iteration, inertia, empty.numel()
            )
            converged = previous_inertia - inertia <= tol * inertia
            previous_inertia = inertia
            if converged and empty.numel() == 0:
                break
        return centers, inertia, iteration

    def _fit_lloyd(self, sample: torch.Tensor, generator: torch.Generator) -> None:
        """Seed and refine on subsamples (cheap iterations), keep the best, then finish on all.

        Lloyd's tail on 1e5+ frames creeps (0.05% an iteration for dozens of iterations), so
        most iterations run on the ``init_size`` subsample at ``tol / 10``, and the full
        sample only polishes the result at ``tol``.
        """
        best_centers, best_inertia = None, math.inf
        for _ in range(self.n_init):
            subsample = self._subsample(sample, generator)
            centers, inertia = kmeans_plusplus(subsample, self.n_clusters, generator)
            if subsample.shape[0] < sample.shape[0]:
                centers, inertia, _ = self._lloyd(subsample, centers, self.tol / 10)
            # else the seedings compete on their k-means++ potential over all the frames
            if inertia < best_inertia or best_centers is None:
                best_centers, best_inertia = centers, inertia
        centers, _, self.n_iter_ = self._lloyd(sample, best_centers, self.tol)
        self.cluster_centers_ = centers
        _, distances = self._assign(sample, centers)
        self.inertia_ = float(distances.double().sum())

    def _minibatch_step(
        self, batch: torch.Tensor, centers: torch.Tensor, counts: torch.Tensor
    ) -> tuple[float, torch.Tensor]:
        """Sculley update in place; returns the batch inertia before the step and the distances."""
        batch_sums = torch.zeros_like(centers, dtype=torch.float64)
        labels, distances = self._assign(batch, centers, exact=False, sums=batch_sums)
        batch_counts = torch.bincount(labels, minlength=self.n_clusters).double()
        counts += batch_counts
        hit = batch_counts > 0
        # c <- c + (sum - n c) / v  ==  (1 - n/v) c + (n/v) mean_batch
        moved = batch_sums[hit] - batch_counts[hit].unsqueeze(1) * centers[hit].double()
        step = moved / counts[hit].unsqueeze(1)
        centers[hit] += step.float()
        return float(distances.double().sum()), distances

    def _reseed_unreached(
        self,
        centers: torch.Tensor,
        counts: torch.Tensor,
        batch: torch.Tensor,
        distances: torch.Tensor,
    ) -> None:
        unreached = (counts == 0).nonzero().squeeze(1)
        if unreached.numel() > 0:
            _reseed_farthest(centers, unreached, batch, distances)

    def _fit_minibatch_tensor(self, features: torch.Tensor, generator: torch.Generator) -> KMeans:
        """Mini-batch passes over a tensor that stays where it is; batches go to the device."""
        self._check_enough(features.shape[0])
        centers = self._seed(features, generator)
        counts = torch.zeros(self.n_clusters, dtype=torch.float64, device=self.device)
        previous = math.inf
        for iteration in range(1, self.max_iter + 1):
            order = torch.randperm(features.shape[0], generator=generator).to(features.device)
            total = 0.0
            for start in range(0, features.shape[0], self.batch_size):
                batch = features[order[start : start + self.batch_size]].to(self.device)
                batch_inertia, distances = self._minibatch_step(batch, centers, counts)
                total += batch_inertia
            self._reseed_unreached(centers, counts, batch, distances)
            self.n_iter_ = iteration
            if previous - total <= self.tol * total:
                break
            previous = total
        self.cluster_centers_ = centers
        self.inertia_ = self.inertia(features)
        return self

    def _fit_minibatch_stream(self, chunks: Iterable, generator: torch.Generator) -> KMeans:
        """Mini-batch over chunks; the first ``init_size`` frames seed k-means++."""
        single_pass = iter(chunks) is chunks
        passes = 1 if single_pass else self.max_iter
        init_size = self.init_size or max(30_000, 50 * self.n_clusters)
        centers = counts = None
        dimension = None
        buffered: list[torch.Tensor] = []
        buffered_rows = 0
        self.n_iter_ = 0
        for _ in range(passes):
            batch = distances = None
            for index, chunk in enumerate(chunks):
                chunk = _as_frames(chunk, name=f"chunk {index}").to(self.device)
                if dimension is None:
                    dimension = chunk.shape[1]
                elif chunk.shape[1] != dimension:
                    raise ValueError(
                        f"chunk {index} has D={chunk.shape[1]}, earlier chunks D={dimension}"
                    )
                buffered.append(chunk)
                buffered_rows += chunk.shape[0]
                if centers is None:
                    if buffered_rows < init_size:
                        continue
                    centers = self._seed(torch.cat(buffered), generator)
                    counts = torch.zeros(self.n_clusters, dtype=torch.float64, device=self.device)
                while buffered_rows >= self.batch_size:
                    pending = torch.cat(buffered)
                    batch, rest = pending[: self.batch_size], pending[self.batch_size :]
                    buffered, buffered_rows = [rest], rest.shape[0]
                    _, distances = self._minibatch_step(batch, centers, counts)
            if centers is None:  # the whole stream is smaller than init_size
                if not buffered:
                    raise ValueError("fit received an empty iterable of chunks")
                everything = torch.cat(buffered)
                self._check_enough(everything.shape[0])
                centers = self._seed(everything, generator)
                counts = torch.zeros(self.n_clusters, dtype=torch.float64, device=self.device)
            if buffered_rows > 0:
                batch = torch.cat(buffered)
                _, distances = self._minibatch_step(batch, centers, counts)
            buffered, buffered_rows = [], 0
            if batch is not None:
                self._reseed_unreached(centers, counts, batch, distances)
            self.n_iter_ += 1
        self.cluster_centers_ = centers
        self.inertia_ = None
        return self

    # --------------------------------------------------------------- inference
    def _centers(self) -> torch.Tensor:
        if self.cluster_centers_ is None:
            raise ValueError("KMeans is not fitted: call fit() or KMeans.load() first")
        return self.cluster_centers_

    def _check_features(self, features) -> torch.Tensor:
        centers = self._centers()
        features = _as_frames(features)
        if features.shape[1] != centers.shape[1]:
            raise ValueError(
                f"X has D={features.shape[1]} but the centers have D={centers.shape[1]}"
            )
        return features

    def _assign_blocks(self, features: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Labels on the CPU and the inertia, moving ``_TRANSFER_ROWS`` rows at a time to the
        device, so predicting on more frames than the GPU holds works."""
        centers = self._centers()
        labels, inertia = [], 0.0
        for start in range(0, features.shape[0], _TRANSFER_ROWS):
            block = features[start : start + _TRANSFER_ROWS].to(self.device)
            block_labels, distances = self._assign(block, centers)
            labels.append(block_labels.cpu())
            inertia += float(distances.double().sum())
        return torch.cat(labels), inertia

    def predict(self, features) -> torch.Tensor:
        """Nearest-center index of each frame: ``(N, D) -> (N,)`` int64 on the CPU."""
        return self._assign_blocks(self._check_features(features))[0]

    def inertia(self, features) -> float:
        """Sum of squared distances of ``(N, D)`` frames to their nearest center (float64 sum)."""
        return self._assign_blocks(self._check_features(features))[1]

    # ----------------------------------------------------------------- storage
    @property
    def fingerprint(self) -> str:
        """Short sha256 of the centers' float32 bytes: tags label files with the model made them."""
        centers = self._centers().detach().to("cpu", torch.float32).contiguous()
        return hashlib.sha256(centers.numpy().tobytes()).hexdigest()[:12]

    def _config(self) -> dict:
        return {
            "n_clusters": self.n_clusters,
            "algorithm": self.algorithm,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "n_init": self.n_init,
            "init_size": self.init_size,
            "max_fit_frames": self.max_fit_frames,
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
            "seed": self.seed,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write centers, config, inertia and fingerprint with ``torch.save`` (plain tensors/dicts)."""
        state = {
            "format": _FILE_FORMAT,
            "version": _FILE_VERSION,
            "centers": self._centers().detach().to("cpu", torch.float32).contiguous(),
            "config": self._config(),
            "inertia": self.inertia_,
            "n_iter": self.n_iter_,
            "fingerprint": self.fingerprint,
        }
        save_torch_atomic(state, path, durable=False)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> KMeans:
        """Read a file written by :meth:`save` (``torch.load(weights_only=True)``).

        Raises:
            ValueError: missing, truncated or corrupt file, or one that is not a k-means model.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"k-means file not found: {path}")
        state = load_torch_file(path, "k-means file")
        if not isinstance(state, dict) or state.get("format") != _FILE_FORMAT:
            raise ValueError(f"{path}: not a speechssl k-means file")
        centers = state.get("centers")
        config = state.get("config")
        if (
            not isinstance(centers, torch.Tensor)
            or centers.dim() != 2
            or not isinstance(config, dict)
        ):
            raise ValueError(f"{path}: k-means file lacks (K, D) centers or config")
        if not bool(torch.isfinite(centers).all()) or centers.shape[0] != config.get("n_clusters"):
            raise ValueError(f"{path}: k-means centers are corrupt")
        kmeans = cls(device=device, **config)
        kmeans.cluster_centers_ = centers.to(kmeans.device, torch.float32)
        kmeans.inertia_ = state.get("inertia")
        kmeans.n_iter_ = int(state.get("n_iter", 0))
        if state.get("fingerprint") not in (None, kmeans.fingerprint):
            raise ValueError(
                f"{path}: k-means fingerprint does not match its centers (corrupt file)"
            )
        return kmeans

    def __repr__(self) -> str:
        fitted = f", fingerprint={self.fingerprint}" if self.cluster_centers_ is not None else ""
        return f"KMeans(n_clusters={self.n_clusters}, algorithm={self.algorithm!r}, device={self.device}{fitted})"
