"""A linear probe solved to convergence: the cheap, deterministic ruler for frozen upstreams.

Each utterance is one vector per hidden state (mean, or mean + std, of its frames; see
:mod:`speechssl.tasks.pooled`), standardised with the training set's statistics. A
multinomial logistic regression is fitted with full-batch L-BFGS in float64 to the same
objective as scikit-learn's ``LogisticRegression(C=C)`` (``lbfgs``, L2, unpenalised
intercept)::

    sum_i cross_entropy(W x_i + b, y_i) + ||W||^2 / (2 C)

The hidden state (or the average of all of them) and ``C`` are chosen on the dev set;
ties go to the stronger regularisation and the lower layer. Nothing is random, so the
probe needs no seeds: its uncertainty is the test set's (bootstrap over test items).

Written here rather than calling scikit-learn because it runs on the encoder's device,
warm-starts along the ``C`` path and fits all layers of a 12-layer upstream in seconds;
a test holds it to scikit-learn's accuracy.

Example:
    >>> import torch
    >>> generator = torch.Generator().manual_seed(0)
    >>> labels = torch.arange(60) % 3
    >>> features = torch.randn(60, 2, 2, 8, generator=generator)  # (N, L + 1, 2, D)
    >>> features[:, 1, 0, :3] += 3 * torch.nn.functional.one_hot(labels, 3)  # layer 1 knows
    >>> probe = LinearProbe(LinearProbeConfig(c_grid=[0.1, 1.0]))
    >>> result = probe.fit(features[:40], labels[:40], features[40:50], labels[40:50])
    >>> result.layer, float((probe.predict(features[50:]) == labels[50:]).float().mean()) >= 0.8
    (1, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.heads.pooling import pool_hidden_states
from speechssl.progress_bar import progress_bar

__all__ = [
    "LinearProbe",
    "LinearProbeConfig",
    "ProbeFit",
    "ProbeHead",
    "ProbeLayerChoice",
    "fit_logistic_regression",
    "probe_features",
]

STATISTICS = ("mean", "mean_std")


@dataclass
class LinearProbeConfig:
    """The ``head=linear_probe`` group.

    Attributes:
        kind: schema tag, ``"linear_probe"``.
        mode: always ``"frozen"`` (the probe never changes the upstream).
        statistics: ``"mean_std"`` (mean and std of each hidden state) or ``"mean"``.
        c_grid: inverse L2 strengths tried on dev (scikit-learn's ``C``).
        layer_average: also try the average of all hidden states' features.
        max_iterations: L-BFGS iterations per fit (converged fits stop earlier).
        tolerance: L-BFGS gradient tolerance.
    """

    kind: str = "linear_probe"
    mode: str = "frozen"
    statistics: str = "mean_std"
    c_grid: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0, 100.0])
    layer_average: bool = True
    max_iterations: int = 500
    tolerance: float = 1e-6


def probe_features(features: torch.Tensor, layer: int, statistics: str) -> torch.Tensor:
    """The probe's input: ``(N, L + 1, 2, D)`` pooled statistics -> ``(N, K * D)``, from
    hidden state ``layer`` (-1: the average over hidden states), ``K`` = 2 for
    ``"mean_std"``, 1 for ``"mean"``."""
    if statistics == "mean":
        features = features[:, :, :1]  # (N, L+1, 1, D): means only
    selected = features.mean(dim=1) if layer == -1 else features[:, layer]  # (N, K, D)
    return selected.reshape(selected.shape[0], -1)  # (N, K, D) -> (N, K * D)


class ProbeFit(NamedTuple):
    """What the dev set chose: ``layer`` (an index, or -1 for the layer average), ``c``,
    the dev accuracy of the choice, and the best dev accuracy of every layer (the last
    entry is the layer average when it was tried)."""

    layer: int
    c: float
    dev_accuracy: float
    dev_accuracy_per_layer: list[float]


def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    c: float,
    *,
    initial: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iterations: int = 500,
    tolerance: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with L2 ``1 / (2 c)``, by full-batch L-BFGS.

    Args:
        features: ``(N, D)`` (standardised) float64.
        labels: ``(N,)`` class indices.
        initial: ``(weight (C, D), bias (C,))`` to warm-start from.

    Returns:
        ``(weight (C, D), bias (C,))``.
    """
    dimension = features.shape[1]
    if initial is None:
        weight = torch.zeros(num_classes, dimension, dtype=features.dtype, device=features.device)
        bias = torch.zeros(num_classes, dtype=features.dtype, device=features.device)
    else:
        weight, bias = (tensor.detach().clone() for tensor in initial)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iterations,
        tolerance_grad=tolerance,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    # scikit-learn's objective divided by N, so the tolerances do not depend on the set size
    penalty = 1.0 / (2.0 * c * features.shape[0])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.addmm(bias, features, weight.T)  # (N, D) @ (D, C) + (C,)
        loss = F.cross_entropy(logits, labels) + penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


class LinearProbe:
    """Chooses a layer and ``C`` on dev, then predicts with that fit (see the module docstring).

    Features are ``(N, L + 1, 2, D)`` per-layer means and stds, as cached by
    :class:`speechssl.tasks.pooled.FeatureCache`.
    """

    def __init__(self, config: LinearProbeConfig | None = None) -> None:
        self.config = config or LinearProbeConfig()
        if self.config.statistics not in STATISTICS:
            raise ValueError(
                f"head.statistics must be one of {STATISTICS}, got {self.config.statistics!r}"
            )
        if not self.config.c_grid or min(self.config.c_grid) <= 0:
            raise ValueError(f"head.c_grid must list positive values, got {self.config.c_grid}")
        self.layer: int | None = None
        self._mean = self._scale = self._weight = self._bias = None

    def _layer_features(self, features: torch.Tensor, layer: int) -> torch.Tensor:
        return probe_features(features, layer, self.config.statistics).double()

    @staticmethod
    def _standardiser(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = train.mean(dim=0)
        scale = train.std(dim=0, unbiased=False)
        # constant features (e.g. silent channels) carry nothing: leave them at 0
        return mean, torch.where(scale > 1e-8, scale, torch.ones_like(scale))

    def fit(
        self,
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        dev_features: torch.Tensor,
        dev_labels: torch.Tensor,
        num_classes: int | None = None,
    ) -> ProbeFit:
        """Fit every (layer, C) on train, keep the best on dev; returns the choice."""
        if len(dev_labels) == 0:
            raise ValueError("the linear probe chooses its layer and C on a dev set: it is empty")
        train_labels = train_labels.long()
        num_classes = num_classes or int(max(train_labels.max(), dev_labels.max())) + 1
        layers = list(range(train_features.shape[1]))
        if self.config.layer_average and len(layers) > 1:
            layers.append(-1)
        best, per_layer = None, []
        grid = sorted(self.config.c_grid)
        # one L-BFGS fit per (layer, C): a bar on a terminal, a line every 30 s in a log
        progress = progress_bar(
            total=len(layers) * len(grid), desc="probe fit", unit="fit", leave=False
        )
        for layer in layers:
            train = self._layer_features(train_features, layer)
            mean, scale = self._standardiser(train)
            train = (train - mean) / scale
            dev = (self._layer_features(dev_features, layer).to(train.device) - mean) / scale
            layer_best, initial = -1.0, None
            # strongest regularisation first: each fit warm-starts the next
            for c in grid:
                initial = fit_logistic_regression(
                    train,
                    train_labels.to(train.device),
                    num_classes,
                    c,
                    initial=initial,
                    max_iterations=self.config.max_iterations,
                    tolerance=self.config.tolerance,
                )
                weight, bias = initial
                predicted = torch.addmm(bias, dev, weight.T).argmax(dim=1).cpu()
                accuracy = float((predicted == dev_labels.long().cpu()).double().mean())
                layer_best = max(layer_best, accuracy)
                if best is None or accuracy > best[0]:
                    best = (accuracy, layer, c, mean, scale, weight, bias)
                progress.update()
            per_layer.append(layer_best)
        progress.close()
        accuracy, self.layer, c, self._mean, self._scale, self._weight, self._bias = best
        return ProbeFit(self.layer, c, accuracy, per_layer)

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` class probabilities of the chosen fit."""
        if self._weight is None:
            raise RuntimeError("fit the probe before predicting")
        selected = self._layer_features(features, self.layer).to(self._mean.device)
        standardised = (selected - self._mean) / self._scale
        return torch.softmax(torch.addmm(self._bias, standardised, self._weight.T), dim=1).float()

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """``(N,)`` predicted class indices."""
        return self.probabilities(features).argmax(dim=1).cpu()


class ProbeLayerChoice(nn.Module):
    """The hidden state a fitted probe reads: one index, or -1 for the average of all.

    It stands where a trained head has its ``WeightedLayerSum`` (``num_layers`` hidden
    states in, ``weights()`` for plots), but it is fixed by the fit, not learned. The
    choice is kept as a buffer of weights over the hidden states (one-hot, or uniform for
    the average), so that the model exports (ONNX) without data-dependent indexing.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.register_buffer("selection", torch.full((num_layers,), 1.0 / num_layers))

    def choose(self, layer: int) -> None:
        """Read hidden state ``layer`` (-1: the average of all)."""
        if layer == -1:
            self.selection.fill_(1.0 / self.num_layers)
        else:
            self.selection.copy_(F.one_hot(torch.tensor(layer), self.num_layers).float())

    @property
    def layer(self) -> int:
        """The chosen index, -1 for the average."""
        if bool((self.selection == self.selection[0]).all()) and self.num_layers > 1:
            return -1
        return int(self.selection.argmax())

    def weights(self) -> torch.Tensor:
        """``(num_layers,)``: one-hot at the chosen hidden state, or uniform (the average)."""
        return self.selection.detach().clone()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(N, L + 1, K, D)`` -> ``(N, K, D)``: the chosen hidden state's statistics."""
        return torch.einsum("nlkd,l->nkd", pooled, self.selection)


class ProbeHead(nn.Module):
    """A fitted :class:`LinearProbe` as a head over hidden states, so that a frozen encoder
    plus the probe is one model (``speechssl predict``, export) that gives the probe's
    probabilities on raw audio.

    ``forward(hidden_states, lengths)``: ``L + 1`` tensors ``(B, F, D)`` and frame
    lengths ``(B,)`` -> logits ``(B, C)``: per-layer mean (and std) over valid frames, the
    chosen layer (or the average), standardised with the training set's statistics, then
    the logistic regression. Every fitted value is a buffer, so the state dict holds it.

    Example:
        >>> import torch
        >>> generator = torch.Generator().manual_seed(0)
        >>> labels = torch.arange(40) % 2
        >>> hidden = (torch.randn(40, 6, 4, generator=generator),) * 2  # 2 x (B, F, D)
        >>> hidden[1][:, :, 0] += 3 * labels[:, None]
        >>> lengths = torch.full((40,), 6)
        >>> stats = pool_hidden_states(hidden, lengths)  # (B, L + 1, 2, D)
        >>> probe = LinearProbe(LinearProbeConfig(c_grid=[1.0], layer_average=False))
        >>> _ = probe.fit(stats, labels, stats, labels)
        >>> head = ProbeHead.from_probe(probe, input_dim=4, num_classes=2, num_layers=2)
        >>> torch.equal(head(hidden, lengths).argmax(dim=1), probe.predict(stats))
        True
    """

    def __init__(
        self, input_dim: int, num_classes: int, num_layers: int, statistics: str = "mean_std"
    ) -> None:
        super().__init__()
        if statistics not in STATISTICS:
            raise ValueError(f"head.statistics must be one of {STATISTICS}, got {statistics!r}")
        self.statistics = statistics
        self.layer_sum = ProbeLayerChoice(num_layers)
        width = input_dim * (2 if statistics == "mean_std" else 1)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.register_buffer("weight", torch.zeros(num_classes, width))
        self.register_buffer("bias", torch.zeros(num_classes))

    @classmethod
    def from_probe(
        cls, probe: LinearProbe, input_dim: int, num_classes: int, num_layers: int
    ) -> ProbeHead:
        """The head of a fitted ``probe`` (its layer, standardiser and weights, as float32)."""
        if probe.layer is None:
            raise RuntimeError("fit the probe before making a head of it")
        head = cls(input_dim, num_classes, num_layers, probe.config.statistics)
        head.layer_sum.choose(probe.layer)
        for name, value in (
            ("mean", probe._mean),
            ("scale", probe._scale),
            ("weight", probe._weight),
            ("bias", probe._bias),
        ):
            getattr(head, name).copy_(value.float().cpu())
        return head

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C)`` from cached statistics ``(N, L + 1, 2, D)``."""
        pooled = pooled.float().to(self.mean.device)
        if self.statistics == "mean":
            pooled = pooled[:, :, :1]  # (N, L+1, 1, D): means only
        selected = self.layer_sum(pooled)  # (N, K, D), as probe_features chooses
        standardised = (selected.reshape(selected.shape[0], -1) - self.mean) / self.scale
        return torch.addmm(self.bias, standardised, self.weight.T)  # (N, K*D) @ (K*D, C)

    def forward(self, hidden_states, lengths: torch.Tensor) -> torch.Tensor:
        return self.logits_from_pooled(pool_hidden_states(hidden_states, lengths))

    def layer_weights(self) -> torch.Tensor:
        """``(L + 1,)``: where the probe reads (one-hot, or uniform for the average)."""
        return self.layer_sum.weights()
