"""Long evaluation steps report progress, and a stopped ``evaluate`` keeps what it finished
(issue 28, item 2).

Into a file (not a terminal) the encoding, probe and per-seed bars write plain lines, at
most one per ``SPEECHSSL_PROGRESS_INTERVAL`` seconds; a rerun on the same ``--out``
reuses each finished fit (``cell.json``) and each feature-cache entry.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from speechssl.cli import main
from speechssl.data.compact import Manifest
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.heads.linear_probe import LinearProbe, LinearProbeConfig
from speechssl.progress_bar import INTERVAL_VARIABLE, log_interval
from speechssl.tasks.pooled import FeatureCache
from speechssl.tasks.suite import Suite, Upstream
from speechssl.testing import write_labelled_csv, write_tone


class SlowFbank(FbankUpstream):
    """FBANK that takes 50 ms a batch: a run longer than the log interval."""

    def forward(self, wav, lengths):
        time.sleep(0.05)
        return super().forward(wav, lengths)


def _rows(root, name, count):
    return [
        {
            "id": f"{name}{i}",
            "audio": str(write_tone(root / name / f"{i}.wav", 0.5, frequency=300 + 2000 * (i % 2))),
            "duration": 0.5,
            "sample_rate": 16000,
            "label": "high" if i % 2 else "low",
        }
        for i in range(count)
    ]


def test_progress_lines_reach_a_redirected_log(tmp_path, monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0.02")
    train, dev, test = (Manifest.from_rows(_rows(tmp_path, n, 8)) for n in ("tr", "dv", "te"))
    suite = Suite(LinearProbeConfig(), run_dir=tmp_path / "run")
    # one utterance a batch: 8 slow batches per split
    suite.cache.data_config.max_batch_seconds = 0.5
    upstream = Upstream("fbank", lambda seed: SlowFbank(n_mels=40), seeds=(0, 1))
    with open(tmp_path / "run.log", "w") as log:
        monkeypatch.setattr(sys, "stderr", log)
        suite.classification(upstream, train, dev, test, ["low", "high"])
    text = (tmp_path / "run.log").read_text()
    lines = text.splitlines()
    assert "\r" not in text  # whole lines, no redrawn frames
    encode = [line for line in lines if line.startswith("encode fbank: ")]
    assert encode and any("8/8" in line for line in encode), text
    assert any(line.startswith("classification / fbank: ") for line in lines), text
    assert all("%" in line and "/" in line for line in encode)  # counts and a percentage


def test_the_interval_variable_is_checked():
    assert log_interval() > 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(INTERVAL_VARIABLE, "-1")
        with pytest.raises(ValueError, match=INTERVAL_VARIABLE):
            log_interval()


def test_a_rerun_after_a_stop_reuses_finished_cells_and_cached_features(tmp_path, monkeypatch):
    sets = {}
    for name, count in (("train", 6), ("valid", 3), ("test", 3)):
        rows = [
            (str(write_tone(tmp_path / name / f"{label}{i}.wav", 0.5, frequency=frequency)), label)
            for label, frequency in (("low", 300.0), ("high", 2500.0))
            for i in range(count)
        ]
        sets[name] = str(write_labelled_csv(tmp_path / f"{name}.csv", rows))

    def evaluate(out):
        arguments = ["evaluate", "fbank_transformer_tiny", "--task", "classify"]
        arguments += ["--data", sets["train"], "--valid", sets["valid"], "--test", sets["test"]]
        return main([*arguments, "--seeds", "0", "1", "--out", str(out)])

    encoded, fits = [], []
    real_encode, real_fit = FeatureCache._encode, LinearProbe.fit

    def counting_encode(self, encoder, manifest):
        encoded.append(len(manifest))
        return real_encode(self, encoder, manifest)

    def fit_then_stop(self, *args, **kwargs):
        fits.append(1)
        if len(fits) == 2:  # seed 1: train and dev encoded, the fit is stopped (Ctrl-C)
            raise KeyboardInterrupt
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(FeatureCache, "_encode", counting_encode)
    monkeypatch.setattr(LinearProbe, "fit", fit_then_stop)
    assert evaluate(tmp_path / "out") == 130  # "interrupted", exit code 130
    cell = json.loads(
        (tmp_path / "out/classification/fbank_transformer_tiny/seed0/cell.json").read_text()
    )
    assert len(cell["predicted"]) == 6  # seed 0 was kept when the run stopped
    assert encoded == [12, 6, 6, 12, 6]  # seed 0's three splits, seed 1's train and dev

    encoded.clear()
    fits.clear()
    monkeypatch.setattr(
        LinearProbe, "fit", lambda self, *a, **k: fits.append(1) or real_fit(self, *a, **k)
    )
    assert evaluate(tmp_path / "out") == 0
    assert fits == [1] and encoded == [6]  # seed 1's fit, and its test split only
    resumed = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [
        run.get("reused", False)
        for run in resumed["details"]["upstreams"]["fbank_transformer_tiny"]["runs"]
    ] == [True, False]
    assert evaluate(tmp_path / "fresh") == 0
    fresh = json.loads((tmp_path / "fresh" / "results.json").read_text())
    assert resumed["table"] == fresh["table"]  # what an uninterrupted run reports
