"""The user's data for fine-tuning: CSV / folder / manifest reading, the stratified split,
label checks and the upstream spec, each bad input as one clear ValueError line."""

import json
from collections import Counter

import pytest
import torch

from speechssl.data.manifest import write_jsonl
from speechssl.heads import FbankUpstream
from speechssl.tasks.user_data import (
    FinetuneDataConfig,
    check_labels,
    load_upstream,
    load_user_data,
    read_labelled,
    stratified_split,
)
from speechssl.testing import write_tone


@pytest.fixture
def tones(tmp_path):
    """Six tones in ``<label>/`` folders and a CSV listing them with relative paths."""
    for index in range(6):
        label = "low" if index % 2 else "high"
        write_tone(tmp_path / "clips" / label / f"t{index}.wav", 0.25 + 0.05 * index)
    lines = ["path,label"] + [
        f"clips/{'low' if i % 2 else 'high'}/t{i}.wav,{'low' if i % 2 else 'high'}"
        for i in range(6)
    ]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_csv_folder_and_manifest_give_the_same_rows(tones):
    from_csv = read_labelled(tones / "data.csv", "train")
    from_folder = read_labelled(tones / "clips", "train")
    write_jsonl(tones / "all.jsonl", from_folder)  # as `speechssl prepare folder` writes it
    from_manifest = read_labelled(tones / "all.jsonl", "train")

    def key(rows):
        return sorted(
            (row["audio"], row["label"], row["duration"], row["sample_rate"]) for row in rows
        )

    assert key(from_csv) == key(from_folder) == key(from_manifest)
    # durations come from the files (relative CSV paths resolved against the CSV's folder)
    assert sorted(row["duration"] for row in from_csv) == pytest.approx(
        [0.25 + 0.05 * i for i in range(6)]
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("path,label\n", "no data rows"),
        ("file,label\na.wav,x\n", "has no 'path' column"),
        ("path,label\nclips/high/t0.wav,\n", "has an empty label"),
        ("path,label\nclips/high/none.wav,high\n", "none.wav listed in"),
        ("path,label\nclips/high/t0.wav,high,extra\n", "malformed line: line 2"),
    ],
)
def test_bad_csv_is_one_line(tones, content, message):
    (tones / "bad.csv").write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        read_labelled(tones / "bad.csv", "valid")
    assert "\n" not in str(error.value) and str(error.value).startswith("data.valid: ")


def test_an_unreadable_file_is_named_with_the_count_of_others(tones):
    for name in ("t0.wav", "t2.wav"):
        (tones / "clips" / "high" / name).write_bytes(b"not audio at all" * 4)
    with pytest.raises(ValueError, match=r"t0\.wav .*unreadable.*\(and 1 more unusable files\)"):
        read_labelled(tones / "data.csv", "train")


def test_stratified_split_is_seeded_and_keeps_every_class_in_train():
    rows = [{"id": str(i), "label": label} for i, label in enumerate("a" * 20 + "b" * 10 + "c")]
    train, valid = stratified_split(rows, 0.1, seed=3)
    assert Counter(row["label"] for row in valid) == {"a": 2, "b": 1}
    assert Counter(row["label"] for row in train) == {"a": 18, "b": 9, "c": 1}
    assert stratified_split(rows, 0.1, seed=3) == (train, valid)
    assert stratified_split(rows, 0.1, seed=4)[1] != valid


def test_label_checks_name_the_label_and_the_file():
    train = [{"label": "a", "audio": "x.wav"}, {"label": "b", "audio": "y.wav"}]
    assert check_labels(train, {}) == ["a", "b"]
    assert check_labels(train, {}, ["b", "a"]) == ["b", "a"]  # explicit order is kept
    with pytest.raises(
        ValueError, match=r"label 'c' of z\.wav in data\.test \(t\.csv\) never appears"
    ):
        check_labels(train, {"test": ([{"label": "c", "audio": "z.wav"}], "t.csv")})
    with pytest.raises(ValueError, match="class 'c' of data.labels has no training example"):
        check_labels(train, {}, ["a", "b", "c"])
    with pytest.raises(ValueError, match="a classifier needs 2"):
        check_labels(train[:1], {})


def test_load_user_data_carves_valid_and_writes_manifests(tones):
    config = FinetuneDataConfig(train=str(tones / "data.csv"), valid_fraction=0.34)
    data = load_user_data(config, tones / "out", seed=0)
    assert data.labels == ["high", "low"] and len(data.valid) == 2 and len(data.train) == 4
    assert {row["label"] for row in data.valid} == {"high", "low"} and data.test == []
    assert json.loads((tones / "out" / "labels.json").read_text()) == ["high", "low"]
    assert (tones / "out" / "valid.jsonl").is_file() and not (tones / "out" / "test.jsonl").exists()


def test_upstream_specs(tmp_path):
    encoder, kind = load_upstream("fbank", n_mels=40)
    assert kind == "fbank" and isinstance(encoder, FbankUpstream) and encoder.output_dim == 40
    first, kind = load_upstream("hubert_tiny", seed=1)
    second, _ = load_upstream("hubert_tiny", seed=1)
    assert kind == "preset"  # random weights, reproducible with the seed
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values())
    )
    with pytest.raises(ValueError, match="no such file or folder"):
        load_upstream(str(tmp_path / "absent.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_upstream(str(tmp_path / "junk.pt"))
