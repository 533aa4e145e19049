"""The linear probe fits scikit-learn's logistic regression and picks what dev says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from speechssl.data.compact import Manifest
from speechssl.data.loaders import prepare_once
from speechssl.data.manifest import read_jsonl
from speechssl.demo import demo_path
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.heads.linear_probe import LinearProbe, LinearProbeConfig, fit_logistic_regression
from speechssl.tasks.pooled import FeatureCache


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory):
    """Pooled FBANK features of the demo speaker splits and emotion sessions."""
    out = tmp_path_factory.mktemp("demo")
    prepare_once("iemocap", demo_path("iemocap"), out / "iemocap")
    prepare_once("voxceleb1", demo_path("voxceleb1"), out / "voxceleb1")
    cache, upstream = FeatureCache(), FbankUpstream(n_mels=40)
    sets = {}
    speaker = {s: list(read_jsonl(out / "voxceleb1" / f"{s}.jsonl")) for s in ("train", "test")}
    names = sorted({row["speaker"] for row in speaker["train"]})
    sets["speaker"] = tuple(
        (
            cache.pooled(upstream, Manifest.from_rows(rows)),
            torch.tensor([names.index(row["speaker"]) for row in rows]),
        )
        for rows in (speaker["train"], speaker["test"])
    )
    emotion = list(read_jsonl(out / "iemocap" / "all.jsonl"))
    labels = sorted({row["label"] for row in emotion})
    features = cache.pooled(upstream, Manifest.from_rows(emotion))
    targets = torch.tensor([labels.index(row["label"]) for row in emotion])
    test = np.array([row["session"] in (4, 5) for row in emotion])
    sets["emotion"] = ((features[~test], targets[~test]), (features[test], targets[test]))
    return sets


@pytest.mark.parametrize("task", ["speaker", "emotion"])
@pytest.mark.parametrize("c", [0.01, 1.0])
def test_probe_equals_sklearn_logistic_regression(demo_features, task, c):
    (train, train_y), (test, test_y) = demo_features[task]
    # mean + std of the FBANK input, standardised with train statistics, as the probe does
    flatten = lambda x: x[:, 0].reshape(len(x), -1).double()
    train_x, test_x = flatten(train), flatten(test)
    mean, scale = train_x.mean(0), train_x.std(0, unbiased=False).clamp(min=1e-8)
    train_x, test_x = (train_x - mean) / scale, (test_x - mean) / scale
    weight, bias = fit_logistic_regression(train_x, train_y, int(train_y.max()) + 1, c)
    ours = (torch.addmm(bias, test_x, weight.T).argmax(1) == test_y).double().mean().item()
    reference = LogisticRegression(C=c, max_iter=2000, tol=1e-8).fit(train_x.numpy(), train_y)
    theirs = float((reference.predict(test_x.numpy()) == test_y.numpy()).mean())
    assert abs(ours - theirs) <= 0.01 + 1e-9, (ours, theirs)
    assert ours > 1.5 / (int(train_y.max()) + 1)  # and it learns: well above chance


def test_probe_is_deterministic_and_chooses_on_dev():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 5
    features = torch.randn(300, 4, 2, 6, generator=generator)
    # layer 2 carries the class, weakly; layers 0, 1, 3 are noise
    features[:, 2, 0, :5] += 1.5 * torch.nn.functional.one_hot(labels, 5)
    split = (slice(0, 200), slice(200, 250), slice(250, 300))
    fits = []
    for _ in range(2):
        probe = LinearProbe(LinearProbeConfig(layer_average=False))
        fit = probe.fit(features[split[0]], labels[split[0]], features[split[1]], labels[split[1]])
        fits.append((fit, probe.probabilities(features[split[2]])))
    assert fits[0][0] == fits[1][0] and torch.equal(fits[0][1], fits[1][1])
    fit = fits[0][0]
    assert fit.layer == 2 and len(fit.dev_accuracy_per_layer) == 4
    assert fit.dev_accuracy_per_layer[2] == max(fit.dev_accuracy_per_layer) > 0.5


def test_probe_refuses_an_empty_dev_set_and_bad_settings():
    with pytest.raises(ValueError, match="dev set"):
        LinearProbe().fit(
            torch.zeros(4, 1, 2, 3),
            torch.tensor([0, 1, 0, 1]),
            torch.zeros(0, 1, 2, 3),
            torch.zeros(0),
        )
    with pytest.raises(ValueError, match="c_grid"):
        LinearProbe(LinearProbeConfig(c_grid=[0.0]))
    with pytest.raises(ValueError, match="statistics"):
        LinearProbe(LinearProbeConfig(statistics="max"))
