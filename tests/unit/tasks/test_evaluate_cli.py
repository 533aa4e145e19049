"""``speechssl evaluate`` on the demo: a table for each task, one line for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.cli import main
from speechssl.data.compact import Manifest
from speechssl.demo import demo_path
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.tasks.pooled import FeatureCache
from speechssl.testing import iemocap_subset, write_labelled_csv, write_tone


@pytest.mark.parametrize(
    "task, corpus, columns",
    [
        ("speaker-id", "voxceleb1", "speaker ID top-1 (%)"),
        ("speaker-verification", "voxceleb1", "verification EER (%)"),
        ("emotion", "iemocap", "emotion WA (%)"),
    ],
)
def test_each_task_ends_with_a_table(tmp_path, capsys, task, corpus, columns):
    out = tmp_path / "out"
    data = demo_path(corpus)
    if corpus == "iemocap":  # 3 takes per class and actor: every session and class
        data = iemocap_subset(data, tmp_path / "IEMOCAP_full_release")
    code = main(["evaluate", "fbank", "--task", task, "--data", str(data), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"| upstream | {columns}" in printed and "| fbank |" in printed
    results = json.loads((out / "results.json").read_text())
    cell = results["table"][0]
    assert cell["upstream"] == "fbank" and cell["n_seeds"] == 1  # fixed upstream, the probe
    assert cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]


def test_classify_with_a_preset_runs_one_init_per_seed(tmp_path, capsys):
    sets = {}
    for name, count in (("train", 6), ("valid", 3), ("test", 3)):
        rows = [
            (str(write_tone(tmp_path / name / f"{label}{i}.wav", 0.5, frequency=frequency)), label)
            for label, frequency in (("low", 300.0), ("high", 2500.0))
            for i in range(count)
        ]
        sets[name] = write_labelled_csv(tmp_path / f"{name}.csv", rows)
    code = main(
        [
            "evaluate",
            "fbank_transformer_tiny",
            "--task",
            "classify",
            "--data",
            str(sets["train"]),
            "--valid",
            str(sets["valid"]),
            "--test",
            str(sets["test"]),
            "--seeds",
            "0",
            "1",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["table"][0]["n_seeds"] == 2 and results["details"]["seeds"] == [0, 1]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["/no/such/model.pt", "--task", "emotion", "--data", "DEMO"], "upstream="),
        (["fbank", "--task", "emotion", "--data", "/no/such/folder"], "--data"),
        (["fbank", "--task", "speaker-id", "--data", "EMPTY"], "VoxCeleb1"),
    ],
)
def test_bad_upstream_or_data_is_one_line_and_exit_1(tmp_path, capsys, arguments, message):
    (tmp_path / "empty").mkdir()
    arguments = [
        {"DEMO": str(demo_path("iemocap")), "EMPTY": str(tmp_path / "empty")}.get(a, a)
        for a in arguments
    ]
    code = main(["evaluate", *arguments, "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert code == 1
    assert len(error.splitlines()) == 1 and len(error) < 300 and message in error, error
    assert "Traceback" not in error


class CountingFbank(FbankUpstream):
    """FBANK that counts the utterances it encodes."""

    calls = 0

    def forward(self, wav, lengths):
        CountingFbank.calls += wav.shape[0]
        return super().forward(wav, lengths)


def test_a_second_evaluation_of_the_same_upstream_encodes_nothing(tmp_path):
    rows = [
        {
            "id": f"u{i}",
            "audio": str(write_tone(tmp_path / f"u{i}.wav", 0.5, frequency=300 + 100 * i)),
            "duration": 0.5,
            "sample_rate": 16000,
        }
        for i in range(5)
    ]
    manifest, upstream = Manifest.from_rows(rows), CountingFbank(n_mels=40)
    cache = FeatureCache(tmp_path / "cache")
    first = cache.pooled(upstream, manifest)
    assert CountingFbank.calls == 5
    second = cache.pooled(upstream, manifest)
    assert CountingFbank.calls == 5 and torch.equal(first, second)
    # a new process (a new cache object) reads the disk entry: still no forward pass
    third = FeatureCache(tmp_path / "cache").pooled(upstream, manifest)
    assert CountingFbank.calls == 5 and torch.equal(first, third)
    # a changed weight or buffer is a different upstream: encoded again
    changed = CountingFbank(n_mels=24)
    FeatureCache(tmp_path / "cache").pooled(changed, manifest)
    assert CountingFbank.calls == 10
