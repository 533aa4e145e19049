"""Heads on a frozen upstream's cached features: dev metrics count each dev item once for
any batch size; the trained mean-pool head steps over cached vectors (a budget in vectors,
no audio loader), resumes from its last evaluation with the cache on disk, and stops on
``transfer.monitor``; the probe as a model predicts on raw audio what it predicts from the
cache."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.heads import ClassifierHeadConfig
from speechssl.heads.classifier import UtteranceClassifier
from speechssl.heads.linear_probe import LinearProbe, LinearProbeConfig, ProbeHead
from speechssl.tasks.classification import TransferConfig, predict, train_classifier
from speechssl.tasks.pooled import FeatureCache
from speechssl.tasks.pooled_head import PooledHeadModel, label_indices, pooled_loader
from speechssl.testing import write_class_problem
from speechssl.train import Trainer
from speechssl.train.config import TrainerConfig

CONFIG = TransferConfig(
    epochs=6,
    patience=0,
    lr=5e-3,
    data=DataConfig(max_batch_seconds=8.0, max_duration=None, num_buckets=2, num_workers=0),
    trainer=TrainerConfig(log_every=1000, num_workers=0, tensorboard=False, device="cpu"),
)
HEAD = ClassifierHeadConfig(projector_dim=16)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """4 classes, 36 train / 13 dev / 16 test generated utterances, FBANK upstream."""
    rows = write_class_problem(tmp_path_factory.mktemp("problem"), 4, 65, seed=4)
    splits = [Manifest.from_rows(part) for part in (rows[:36], rows[36:49], rows[49:])]
    return splits, [f"c{k}" for k in range(4)], FbankUpstream(n_mels=40)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 5, 13, 100])
def test_dev_accuracy_counts_each_item_once_for_any_batch_size(batch_size, tmp_path):
    """13 dev vectors in batches of ``batch_size``: a short last batch weighs what it holds
    (the old evaluation weighed every batch as 1, i.e. a padded count)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(13, 2, 8, generator=generator)  # (N, L + 1, D)
    labels = torch.arange(13) % 3
    head = UtteranceClassifier(8, num_classes=3, projector_dim=4, num_layers=2)
    model = PooledHeadModel(head)
    loader = pooled_loader(features, labels, batch_size=batch_size, train=False)
    trainer = Trainer(
        model,
        loader,
        loader,
        trainer_cfg=TrainerConfig(max_steps=1, log_every=1, tensorboard=False, device="cpu"),
        run_dir=tmp_path,
        show_progress=False,
    )
    evaluated = trainer.evaluate(loader)
    with torch.no_grad():
        whole = model(
            pooled_loader(features, labels, batch_size=13, train=False).__iter__().__next__()
        )
    correct = round(float(whole[1]["accuracy"]) * 13)
    assert evaluated["accuracy"] == pytest.approx(correct / 13, abs=1e-6)
    assert evaluated["loss"] == pytest.approx(float(whole[0]), abs=1e-5)


def test_the_cached_head_steps_over_vectors_and_resumes_with_its_cache(problem, tmp_path):
    (train, dev, _), labels, upstream = problem
    config = dataclasses.replace(CONFIG, cached_batch_size=8)
    cache = FeatureCache(tmp_path / "cache", data_config=config.data)
    run = train_classifier(
        upstream, HEAD, train, dev, labels, config, tmp_path / "run", cache=cache
    )
    report = run.result["training"]
    # an epoch is a pass over the 36 cached vectors in batches of 8
    assert report["steps_per_epoch"] == math.ceil(36 / 8) and report["steps"] == 6 * 5
    assert cache.encoded_utterances == len(train) + len(dev)
    # a regular checkpoint lies beside best.pt: a killed run resumes from its last evaluation
    checkpoints = sorted(path.name for path in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert "best.pt" in checkpoints and any(name.startswith("step_") for name in checkpoints)
    # a second run on the same folders reads the cache from disk and resumes at its last step
    again_cache = FeatureCache(tmp_path / "cache", data_config=config.data)
    again = train_classifier(
        upstream, HEAD, train, dev, labels, config, tmp_path / "run", cache=again_cache
    )
    assert again_cache.encoded_utterances == 0
    assert again.result["step"] == run.result["step"]
    assert again.best_valid_accuracy == run.best_valid_accuracy
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key


def test_early_stopping_follows_the_monitor(problem, tmp_path):
    (train, dev, _), labels, upstream = problem
    config = dataclasses.replace(CONFIG, epochs=40, patience=2, monitor="valid_loss", lr=3e-2)
    run = train_classifier(
        upstream, HEAD, train, dev, labels, config, tmp_path, cache=FeatureCache()
    )
    report = run.result["training"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    valid = [row for row in rows if row.get("split") == "valid"]
    losses = [row["loss"] for row in valid]
    # the kept weights are those of the lowest valid loss; the run stopped 2 evaluations later
    assert report["monitor"] == "valid_loss" and report["best_value"] == pytest.approx(min(losses))
    assert report["stop"] == "plateau" and len(valid) < 40
    assert losses.index(min(losses)) == len(losses) - 3
    best_accuracy = valid[losses.index(min(losses))]["accuracy"]
    assert run.best_valid_accuracy == pytest.approx(best_accuracy)
    with pytest.raises(ValueError, match="transfer.monitor"):
        TransferConfig(monitor="f1")


def test_the_probe_as_a_model_predicts_on_audio_what_it_predicts_from_the_cache(problem, tmp_path):
    (train, dev, test), labels, upstream = problem
    cache = FeatureCache(data_config=CONFIG.data)
    run = train_classifier(
        upstream,
        LinearProbeConfig(c_grid=[0.1, 1.0]),
        train,
        dev,
        labels,
        CONFIG,
        tmp_path,
        cache=cache,
    )
    assert isinstance(run.model.head, ProbeHead) and run.checkpoint.is_file()
    # the same fit as the ruler (speechssl evaluate): same layer, C and test predictions
    probe = LinearProbe(LinearProbeConfig(c_grid=[0.1, 1.0]))
    fit = probe.fit(
        cache.pooled(upstream, train),
        label_indices(train, "label", labels),
        cache.pooled(upstream, dev),
        label_indices(dev, "label", labels),
        num_classes=4,
    )
    assert run.result["training"]["c"] == fit.c and run.best_valid_accuracy == fit.dev_accuracy
    from_cache = predict(run.model, test, CONFIG, labels=labels, cache=cache)
    from_audio = predict(run.model, test, CONFIG, labels=labels)
    assert torch.equal(from_cache.y_pred, probe.predict(cache.pooled(upstream, test)))
    assert torch.allclose(from_cache.probabilities, from_audio.probabilities, atol=1e-4)
    assert float((from_audio.y_pred == from_audio.y_true).float().mean()) > 0.5  # chance 0.25
