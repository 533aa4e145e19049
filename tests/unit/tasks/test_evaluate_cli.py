"""``speechssl evaluate`` on the demo: a table for each task, one line for bad input."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.cli import main
from speechssl.data.compact import Manifest
from speechssl.demo import demo_path
from speechssl.encoders import build_encoder
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.tasks.classification import front_end_buffers
from speechssl.tasks.evaluate import command_upstream
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
    runs = results["details"]["upstreams"]["fbank_transformer_tiny"]
    assert results["table"][0]["n_seeds"] == 2 and runs["seeds"] == [0, 1]


def _tone_sets(folder):
    """train/valid/test CSVs of low and high tones."""
    sets = {}
    for name, count in (("train", 6), ("valid", 3), ("test", 4)):
        rows = [
            (str(write_tone(folder / name / f"{label}{i}.wav", 0.5, frequency=frequency)), label)
            for i in range(count)
            for label, frequency in (("low", 300.0 + 40 * i), ("high", 2500.0 - 90 * i))
        ]
        sets[name] = str(write_labelled_csv(folder / f"{name}.csv", rows))
    return ["--data", sets["train"], "--valid", sets["valid"], "--test", sets["test"]]


@pytest.fixture()
def one_thread():
    # the probe's small L-BFGS fits run several times faster on one thread of a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_several_upstreams_give_one_paired_delta_per_pair_on_the_same_items(
    tmp_path, capsys, one_thread
):
    out = tmp_path / "out"
    upstreams = ["fbank", "random:fbank_transformer_tiny", "fbank"]
    arguments = ["evaluate", *upstreams, "--task", "classify", *_tone_sets(tmp_path)]
    assert main([*arguments, "--seeds", "0", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    names = ["fbank", "random:fbank_transformer_tiny", "fbank#2"]  # repeated specs get #k
    assert list(results["details"]["upstreams"]) == names
    cells = {(row["upstream"], row["metric"]): row for row in results["table"]}
    assert {row["n_items"] for row in results["table"]} == {8}
    # A - B and A - C (not B - C), once per metric of the task
    pairs = [(row["a"], row["b"], row["metric"]) for row in results["deltas"]]
    assert pairs == [
        ("fbank", names[1], "accuracy"),
        ("fbank", names[1], "ua"),
        ("fbank", names[2], "accuracy"),
        ("fbank", names[2], "ua"),
    ]
    for row in results["deltas"]:
        # on the same items, the point delta is the difference of the table's means
        difference = cells[row["a"], row["metric"]]["mean"] - cells[row["b"], row["metric"]]["mean"]
        assert row["delta"] == pytest.approx(difference, abs=1e-9)
        assert row["ci95"][0] <= row["delta"] <= row["ci95"][1]
    identical = [row for row in results["deltas"] if row["b"] == "fbank#2"]
    assert all(row["delta"] == 0.0 and row["ci95"] == [0.0, 0.0] for row in identical)
    assert all(not row["significant"] and row["better"] is None for row in identical)
    markdown = (out / "results.md").read_text()
    assert (
        "| fbank − fbank#2 |" in markdown
        and "| fbank − random:fbank_transformer_tiny |" in markdown
    )


def test_random_spec_is_the_checkpoints_architecture_and_front_end_without_its_weights(
    tmp_path,
):
    torch.manual_seed(0)
    trained = build_encoder("tpc_tiny", normalization="global").train()
    trained(torch.randn(3, 16000), torch.tensor([16000, 12000, 9000]))  # CMVN statistics
    with torch.no_grad():  # every learned weight moved away from any init value
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter))
    path = tmp_path / "step_00000100.pt"
    torch.save(
        {"model": trained.state_dict(), "encoder_spec": {**trained.spec(), "prefix": ""}}, path
    )
    upstream = command_upstream(f"random:{path}", [0, 1])
    assert upstream.name == "random:step_00000100.pt" and list(upstream.seeds) == [0, 1]
    first, second = upstream.build(0), upstream.build(1)
    assert first.spec() == trained.spec()
    state, saved = first.state_dict(), trained.state_dict()
    assert state.keys() == saved.keys()
    front_end = front_end_buffers(trained)
    assert front_end and float(trained.front_end.normalize.count) > 0
    for key, value in front_end.items():
        assert torch.equal(state[key], value), key
    for key, parameter in trained.named_parameters():
        assert not torch.equal(state[key], parameter), key
    # one init per seed, each reproducible
    assert any(not torch.equal(value, second.state_dict()[key]) for key, value in state.items())
    assert all(
        torch.equal(value, upstream.build(0).state_dict()[key]) for key, value in state.items()
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["/no/such/model.pt", "--task", "emotion", "--data", "DEMO"], "upstream="),
        (["fbank", "--task", "emotion", "--data", "/no/such/folder"], "--data"),
        (["fbank", "--task", "speaker-id", "--data", "EMPTY"], "VoxCeleb1"),
        (["random:fbank", "--task", "emotion", "--data", "DEMO"], "no learned weights"),
        (["fbank", "random:/no/such.pt", "--task", "emotion", "--data", "DEMO"], "upstream="),
        (["fbank", "--task", "emotion"], "needs --data"),
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
