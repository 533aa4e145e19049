"""Shards: manifest -> WebDataset tars -> stream, exactly once over ranks x workers, resume,
broken shards, side labels, and the ``speechssl shard`` command.

The corpus is 40 real clips of the demo LibriSpeech (Ogg Opus), with a made-up utterance
label and random frame labels at 50 Hz so that every kind of target travels.
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from speechssl.cli import main as cli_main
from speechssl.data.compact import Manifest
from speechssl.data.dataset import AudioDataset
from speechssl.data.frame_labels import write_label_file
from speechssl.data.manifest import write_jsonl
from speechssl.data.prepare import prepare
from speechssl.data.shards import (
    ShardLoader,
    ShardStream,
    _tar_samples,
    open_source,
    write_label_shards,
    write_shards,
)
from speechssl.demo import demo_path

pytest.importorskip("webdataset")
LABEL_RATE = 50.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``(manifest, frame labels, manifest path, label path)`` of 40 demo clips."""
    folder = tmp_path_factory.mktemp("shard_corpus")
    prepare("librispeech", demo_path("librispeech"), folder / "prepared", verify=False)
    rows = [
        json.loads(line)
        for line in (folder / "prepared" / "train-clean-100.jsonl").read_text().splitlines()
    ][:40]
    for number, row in enumerate(rows):
        row["label"] = "ab"[number % 2]
    generator = np.random.default_rng(0)
    labels = [generator.integers(0, 100, int(row["duration"] * LABEL_RATE)) for row in rows]
    write_jsonl(folder / "train.jsonl", rows)
    write_label_file(folder / "train.km", labels)
    return Manifest.from_rows(rows), labels, folder / "train.jsonl", folder / "train.km"


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory):
    """The corpus in shards of about 40 s (a dozen or so)."""
    manifest, labels, _, _ = corpus
    out = tmp_path_factory.mktemp("shards")
    write_shards(manifest, out, shard_seconds=40.0, frame_labels=labels, label_rate=LABEL_RATE)
    return out


def _stream(shards, **options):
    settings = {"max_batch_seconds": 20.0, "buffer_size": 8, "seed": 3, **options}
    return ShardStream([shards], **settings)


def _indices(loader) -> list[tuple[int, ...]]:
    return [tuple(batch.indices.tolist()) for batch in loader]


def test_index_lists_every_shard_with_its_seconds(corpus, shards):
    manifest = corpus[0]
    index = json.loads((shards / "index.json").read_text())
    assert index["samples"] == len(manifest)
    assert sum(shard["samples"] for shard in index["shards"]) == len(manifest)
    assert index["seconds"] == pytest.approx(manifest.total_duration, abs=0.01)
    longest = float(manifest.durations.max())
    assert all(shard["seconds"] <= 40.0 + longest for shard in index["shards"])
    assert len(index["shards"]) >= 8


def test_round_trip_same_ids_bytes_labels_and_frame_labels(corpus, shards):
    manifest, labels, _, _ = corpus
    seen = 0
    for shard in json.loads((shards / "index.json").read_text())["shards"]:
        for sample in _tar_samples(shards / shard["path"]):
            row = manifest.row(int(sample["__key__"]))
            meta = json.loads(sample["json"])
            assert meta == {key: row[key] for key in meta} and "audio" not in meta
            assert meta["id"] == row["id"] and meta["label"] == row["label"]
            with open(row["audio"], "rb") as file:
                assert sample["opus"] == file.read()  # never re-encoded
            frames = np.load(io.BytesIO(sample["frame_labels.npy"]))
            assert np.array_equal(frames, labels[int(sample["__key__"])])
            seen += 1
    assert seen == len(manifest)
    # streamed: the same (cropped) waveforms and frame labels as the file-per-utterance
    # dataset (crops of 1 s keep the decoding short)
    dataset = AudioDataset(
        manifest, max_duration=1.0, frame_labels=labels, label_rate=LABEL_RATE, seed=3
    )
    streamed = 0
    for batch in ShardLoader(_stream(shards, shuffle=False, max_duration=1.0)):
        streamed += len(batch)
        for row, index in enumerate(batch.indices.tolist()):
            expected = dataset[index]
            length = int(batch.lengths[row])
            assert torch.equal(batch.wav[row, :length], expected["wav"])
            count = int(batch.frame_label_lengths[row])
            assert torch.equal(batch.frame_labels[row, :count], expected["frame_labels"])
    assert streamed == len(manifest)


def test_cropped_stream_matches_the_dataset_crop(corpus, shards):
    manifest, labels, _, _ = corpus
    dataset = AudioDataset(
        manifest, max_duration=1.0, frame_labels=labels, label_rate=LABEL_RATE, seed=3
    )
    dataset.set_epoch(1)  # another epoch: other crops, the same in both
    stream = _stream(shards, max_duration=1.0)
    stream.set_epoch(1)
    batch = next(iter(ShardLoader(stream)))
    for row, index in enumerate(batch.indices.tolist()):
        assert torch.equal(batch.wav[row, : int(batch.lengths[row])], dataset[index]["wav"])
    assert int(batch.lengths.max()) <= 16000


def test_exactly_once_over_two_ranks_and_two_workers(corpus, shards):
    """Real DataLoader workers; batches within budget; equal counts on both ranks."""
    numbers = []
    counts = []
    for rank in range(2):
        stream = _stream(shards, num_replicas=2, rank=rank, num_workers=2, max_duration=1.0)
        batches = list(ShardLoader(stream))
        counts.append(len(batches))
        assert len(batches) == len(stream)
        numbers += [int(i) for batch in batches for i in batch.indices]
        assert all(len(batch) * 1.0 <= 20.0 for batch in batches)
    assert counts[0] == counts[1]
    assert sorted(numbers) == list(range(len(corpus[0])))


def test_each_epoch_has_another_order_and_the_same_samples(shards):
    stream = _stream(shards, num_replicas=2, rank=0, num_workers=2)

    def order(epoch):
        return [tuple(b.tolist()) for plan in stream.plan(epoch) for bl in plan.blocks for b in bl]

    first, second = order(0), order(1)
    assert first != second
    assert sorted(i for b in first for i in b) == sorted(i for b in second for i in b)
    other_rank = _stream(shards, num_replicas=2, rank=1, num_workers=2)  # every process plans alike
    assert [tuple(b.tolist()) for p in other_rank.plan(0) for bl in p.blocks for b in bl] == first


def test_uneven_shards_keep_every_sample_once_and_counts_equal(corpus, tmp_path):
    manifest = corpus[0]
    write_shards(manifest.subset(range(10)), tmp_path / "five", shard_seconds=1e-3)
    assert len(json.loads((tmp_path / "five" / "index.json").read_text())["shards"]) == 10
    stream = ShardStream([tmp_path / "five"], max_batch_seconds=60.0, num_replicas=3, rank=0)
    plans = stream.plan(0)
    assert len({plan.num_batches for plan in plans}) == 1  # 4 + 3 + 3 shards, equal batches
    numbers = [int(i) for plan in plans for block in plan.blocks for b in block for i in b]
    assert sorted(numbers) == list(range(10))
    too_many = ShardStream([tmp_path / "five"], num_replicas=4, num_workers=3, rank=0)
    with pytest.raises(ValueError, match="10 shards cannot feed 4 rank"):
        too_many.plan(0)


def test_resume_mid_epoch_continues_the_same_sequence(shards):
    def stream():
        return _stream(shards, num_workers=2, max_duration=1.5)

    full = stream()
    full.set_epoch(1)
    expected = [(tuple(b.indices.tolist()), b.wav.sum().item()) for b in ShardLoader(full)]
    assert len(expected) > 5
    state = dict(full.state_dict(), batches_consumed=5)
    resumed = stream()
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    rest = [(tuple(b.indices.tolist()), b.wav.sum().item()) for b in ShardLoader(resumed)]
    assert rest == expected[5:]
    other = _stream(shards, num_workers=2, max_duration=1.5, seed=4)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)


def test_truncated_shard_is_skipped_with_one_line_and_counted(corpus, shards, tmp_path, capfd):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in shards.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    index = json.loads((shards / "index.json").read_text())
    victim = index["shards"][2]
    data = (broken / victim["path"]).read_bytes()
    (broken / victim["path"]).write_bytes(data[: len(data) // 2])
    missing = index["shards"][5]
    (broken / missing["path"]).unlink()
    loader = ShardLoader(ShardStream([broken], max_batch_seconds=20.0, max_duration=1.0))
    batches = list(loader)
    read = [int(i) for batch in batches for i in batch.indices]
    skipped = [record for batch in batches for record in batch.skipped]
    assert len(read) + len(skipped) == len(corpus[0])  # nothing lost silently
    assert len(set(read)) == len(read)
    assert Counter(record["reason"] for record in skipped) == {"unreadable-shard": len(skipped)}
    lost = {record["path"] for record in skipped}
    assert lost == {str(broken / victim["path"]), str(broken / missing["path"])}
    assert len(skipped) >= missing["samples"] + 1
    lines = [line for line in capfd.readouterr().err.splitlines() if "skipped shard" in line]
    assert len(lines) == 2 and victim["path"] in lines[0] + lines[1]


def test_side_label_shards_replace_the_stored_frame_labels(corpus, shards, tmp_path):
    manifest = corpus[0]
    row_of = {manifest.utterance_id(i): i for i in range(len(manifest))}
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in shards.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    # "iteration-2 targets": a label per 20 ms equal to the row number, keyed by id
    durations = manifest.durations
    write_label_shards(
        copy,
        "it2",
        lambda utterance: np.full(int(durations[row_of[utterance]] * 50), row_of[utterance]),
        50.0,
    )
    stream = ShardStream([copy], max_batch_seconds=20.0, label_tag="it2", max_duration=1.0)
    for batch in ShardLoader(stream):
        for row, index in enumerate(batch.indices.tolist()):
            count = int(batch.frame_label_lengths[row])
            assert count == 50 and set(batch.frame_labels[row, :count].tolist()) == {index}


def test_shard_command_writes_the_shards_with_labels(corpus, tmp_path, capsys):
    _, _, manifest_path, label_path = corpus
    code = cli_main(
        [
            "shard",
            str(manifest_path),
            str(tmp_path / "out"),
            "--shard-size",
            "200KB",
            "--labels",
            str(label_path),
            "--label-rate",
            "50",
        ]
    )
    assert code == 0
    assert "shards, 40 samples" in capsys.readouterr().out
    source = open_source(tmp_path / "out")
    assert source.label_rate == 50.0 and len(source.durations) == 40
    sizes = [shard["bytes"] for shard in source.shards]
    assert max(sizes) <= 200_000 + 100_000 and len(sizes) > 2
    with pytest.raises(SystemExit):  # argparse: usage and one line
        cli_main(["shard", str(manifest_path), str(tmp_path / "x"), "--shard-size", "lots"])
    assert "not a size: 'lots'" in capsys.readouterr().err
    code = cli_main(
        ["shard", str(tmp_path / "none.jsonl"), str(tmp_path / "y"), "--shard-seconds", "9"]
    )
    assert code == 1 and "not found" in capsys.readouterr().err


def test_without_the_extra_the_command_says_what_to_install(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "webdataset", None)  # as if not installed
    code = cli_main(["shard", str(corpus[2]), str(tmp_path / "out"), "--shard-seconds", "60"])
    error = capsys.readouterr().err.strip()
    assert code == 1 and error == (
        "speechssl shard: error: shards need webdataset: pip install 'speechssl[shards]'"
    )
