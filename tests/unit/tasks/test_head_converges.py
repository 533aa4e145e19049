"""The default trained head converges: it reaches the converged linear probe (minus 5
points) on generated problems of 4 or 40 classes and 50 to 2,000 utterances, where the old
fixed budget of 200 steps did not."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.heads import ClassifierHeadConfig
from speechssl.heads.linear_probe import LinearProbe
from speechssl.tasks.classification import TransferConfig, predict, train_classifier
from speechssl.tasks.pooled import FeatureCache
from speechssl.tasks.pooled_head import label_indices
from speechssl.testing import write_class_problem
from speechssl.train.config import TrainerConfig

# small batches, as real corpora of 3 s utterances give under a 24 s batch
DEFAULT = TransferConfig(
    data=DataConfig(max_batch_seconds=8.0, max_duration=None, num_buckets=4, num_workers=0),
    trainer=TrainerConfig(log_every=1000, num_workers=0, tensorboard=False, device="cpu"),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _problem(root, num_classes, num_utterances):
    rows = write_class_problem(root, num_classes, num_utterances, seed=num_classes)
    cut = (int(0.6 * len(rows)), int(0.8 * len(rows)))
    splits = rows[: cut[0]], rows[cut[0] : cut[1]], rows[cut[1] :]
    return [Manifest.from_rows(split) for split in splits], [f"c{k}" for k in range(num_classes)]


def _probe_accuracy(cache, upstream, splits, labels):
    (train, dev, test), probe = splits, LinearProbe()
    targets = [label_indices(split, "label", labels) for split in splits]
    probe.fit(cache.pooled(upstream, train), targets[0], cache.pooled(upstream, dev), targets[1])
    return float((probe.predict(cache.pooled(upstream, test)) == targets[2]).float().mean())


def _head_accuracy(cache, upstream, splits, labels, config, run_dir):
    train, dev, test = splits
    run = train_classifier(
        upstream, ClassifierHeadConfig(), train, dev, labels, config, run_dir, cache=cache
    )
    predictions = predict(run.model, test, config, labels=labels, cache=cache)
    return float((predictions.y_pred == predictions.y_true).float().mean()), run


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    """(splits, labels, cache, upstream, probe accuracy) per (classes, utterances), built once."""
    built = {}

    def get(num_classes, num_utterances):
        if (num_classes, num_utterances) not in built:
            root = tmp_path_factory.mktemp(f"problem{num_classes}x{num_utterances}")
            splits, labels = _problem(root, num_classes, num_utterances)
            cache, upstream = FeatureCache(data_config=DEFAULT.data), FbankUpstream(n_mels=80)
            probe = _probe_accuracy(cache, upstream, splits, labels)
            built[num_classes, num_utterances] = splits, labels, cache, upstream, probe
        return built[num_classes, num_utterances]

    return get


@pytest.mark.parametrize("num_classes, num_utterances", [(4, 50), (40, 200), (40, 2000)])
def test_default_head_reaches_the_probe(problems, tmp_path, num_classes, num_utterances):
    splits, labels, cache, upstream, probe = problems(num_classes, num_utterances)
    head, run = _head_accuracy(cache, upstream, splits, labels, DEFAULT, tmp_path / "run")
    assert head >= probe - 0.05, (head, probe, run.result["training"])
    assert probe > 2.0 / num_classes  # the problem is learnable
    report = run.result["training"]
    assert report["stop"] == "plateau" and not report["still_improving"]
    # the three splits were encoded once each, for the probe and every head epoch
    assert cache.encoded_utterances == num_utterances
    assert run.result["training"]["epochs"] > 3  # it ran to a plateau, not a fixed budget


def test_the_old_fixed_budget_of_200_steps_stays_below_the_probe(problems, tmp_path):
    splits, labels, cache, upstream, probe = problems(40, 2000)
    steps_per_epoch = 1200 // 13  # about 13 utterances of 0.6 s in an 8 s batch
    old = dataclasses.replace(DEFAULT, epochs=max(200 // steps_per_epoch, 1), patience=0)
    head, run = _head_accuracy(cache, upstream, splits, labels, old, tmp_path / "run")
    assert run.result["training"]["steps"] < 250  # about the old 200
    assert run.result["training"]["still_improving"]  # and the run says so
    assert head < probe - 0.05, (head, probe)
