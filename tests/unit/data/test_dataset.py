"""Compact manifest, audio dataset and collate: invariants, bad input, reproducible crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from speechssl import audio
from speechssl.data.collate import Batch, collate
from speechssl.data.compact import Manifest
from speechssl.data.dataset import AudioDataset, SkippedItem, append_skipped
from speechssl.data.manifest import read_jsonl, write_jsonl
from speechssl.testing import plant_bad_audio, write_tone


def _rows(count: int, with_text: bool = True) -> list[dict]:
    rows = []
    for index in range(count):
        name = f"{index % 7}-{index % 3}-{index:04d}"
        row = {
            "id": name if index % 5 else f"other-{index}",  # some ids differ from the file stem
            "audio": f"/corpus/é/{index % 7}/{index % 3}/{name}.flac",
            "duration": 1.0 + index * 0.25,
            "sample_rate": 16000 if index % 4 else 8000,
            "speaker": str(index % 7),
        }
        if index % 2:
            row["label"] = ["neu", "hap", "sad"][index % 3]
        if with_text and index % 3:
            row["text"] = f'wörds {index} "quoted"'
        rows.append(row)
    return rows


def test_manifest_round_trips_rows_and_skips_malformed_lines(tmp_path):
    rows = _rows(40)
    path = tmp_path / "train.jsonl"
    write_jsonl(path, rows)
    with open(path, "a", encoding="utf-8") as file:
        file.write("{not json\n")
        file.write(json.dumps({"id": "x", "audio": "/a.wav"}) + "\n")  # missing keys
        file.write(
            json.dumps({"id": "y", "audio": "/y.wav", "duration": "abc", "sample_rate": 16000})
            + "\n"
        )
        file.write(
            json.dumps({"id": "z", "audio": "/z.wav", "duration": -1, "sample_rate": 16000}) + "\n"
        )
        file.write(
            json.dumps({"id": "", "audio": "/e.wav", "duration": 1, "sample_rate": 8000}) + "\n"
        )
    manifest = Manifest.from_jsonl(path)

    assert len(manifest) == 40
    assert len(manifest.skipped) == 5
    assert {record["reason"] for record in manifest.skipped} == {"malformed-line"}
    expected = list(read_jsonl(path, skipped=[]))[:40]
    for index, row in enumerate(expected):
        rebuilt = manifest.row(index)
        text = row.pop("text", "")
        assert rebuilt.pop("text") == text
        assert rebuilt == row
    assert manifest.durations.dtype == np.float32
    assert manifest.columns == ("speaker", "label", "text")
    labels = manifest.column("label")
    assert labels.codes.dtype == np.int32
    assert labels.values() == [row.get("label") for row in expected]
    # Compact: far below the ~500+ bytes a dict per row costs.
    assert manifest.nbytes / len(manifest) < 120


def test_manifest_subset_filter_and_cache_keep_rows_exactly(tmp_path):
    rows = _rows(30)
    manifest = Manifest.from_rows(rows)
    order = [29, 3, 3, 0, 17]
    subset = manifest.subset(order)
    assert [subset.row(i) for i in range(len(order))] == [manifest.row(i) for i in order]
    long = manifest.filter(manifest.durations > 5.0)
    assert [long.utterance_id(i) for i in range(len(long))] == [
        row["id"] for row in rows if row["duration"] > 5.0
    ]
    assert len(manifest.subset([])) == 0
    # The .npz cache reads back the same rows, columns and skip records.
    manifest.skipped.append({"path": "p", "reason": "malformed-line", "detail": "d"})
    manifest.save(tmp_path / "train.manifest")
    loaded = Manifest.load(tmp_path / "train.manifest")
    assert list(loaded.rows()) == list(manifest.rows()) and loaded.skipped == manifest.skipped
    assert loaded.columns == manifest.columns and loaded.durations.dtype == np.float32
    with pytest.raises(ValueError, match="boolean mask"):
        manifest.filter(np.ones(3, dtype=bool))
    with pytest.raises(IndexError):
        manifest.subset([30])


def _write_corpus(folder, durations, sample_rate=16000) -> Manifest:
    rows = []
    for index, seconds in enumerate(durations):
        path = write_tone(folder / f"utt{index}.wav", seconds, sample_rate, 200.0 + 50 * index)
        rows.append(
            {
                "id": f"utt{index}",
                "audio": str(path),
                "duration": seconds,
                "sample_rate": sample_rate,
                "speaker": f"s{index % 2}",
            }
        )
    return Manifest.from_rows(rows)


def test_random_crop_is_reproducible_within_bounds_and_changes_with_epoch(tmp_path):
    manifest = _write_corpus(tmp_path, [3.0, 0.5])
    full = audio.load(manifest.audio_path(0))
    dataset = AudioDataset(manifest, max_duration=1.0, seed=7)
    crop = dataset[0]["wav"]
    assert crop.shape == (16000,)
    # The crop is the window crop_window announces, read from the file.
    start, num_samples = dataset.crop_window(0)
    assert num_samples == 16000 and 0 <= start <= 32000
    assert torch.allclose(full[start : start + 16000], crop)
    assert torch.equal(AudioDataset(manifest, max_duration=1.0, seed=7)[0]["wav"], crop)
    starts = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        starts.add(dataset.crop_window(0)[0])
        assert 0 <= dataset.crop_window(0)[0] <= 48000 - 16000
    assert len(starts) > 1
    # A short utterance is not padded or cropped.
    assert dataset[1]["wav"].shape == (8000,)


def test_crop_after_resampling_stays_within_bounds(tmp_path):
    manifest = _write_corpus(tmp_path, [2.0], sample_rate=22050)
    item = AudioDataset(manifest, sample_rate=16000, max_duration=0.7)[0]
    assert item["wav"].shape[0] == int(0.7 * 16000)


def test_labels_use_given_vocabulary_and_reject_unknown(tmp_path):
    manifest = _write_corpus(tmp_path, [0.2, 0.2, 0.2])
    dataset = AudioDataset(manifest, label_column="speaker", label_vocabulary=["s1", "s0"])
    assert [dataset[i]["label"] for i in range(3)] == [1, 0, 1]
    assert AudioDataset(manifest, label_column="speaker").label_vocabulary == ("s0", "s1")
    with pytest.raises(ValueError, match="not in label_vocabulary"):
        AudioDataset(manifest, label_column="speaker", label_vocabulary=["s0"])


def test_bad_files_are_skipped_counted_and_logged(tmp_path):
    manifest = _write_corpus(tmp_path, [0.3] * 6)
    kinds = ["missing", "empty", "unreadable", "truncated", "non-finite"]
    for index, kind in enumerate(kinds):
        plant_bad_audio(manifest.audio_path(index), kind)
    dataset = AudioDataset(manifest, label_column="speaker")
    items = [dataset[i] for i in range(len(dataset))]
    assert [item.reason for item in items[:5]] == kinds
    assert all(isinstance(item, SkippedItem) for item in items[:5])

    batch = collate(items)
    assert batch.num_skipped == 5 and len(batch) == 1
    assert batch.indices.tolist() == [5] and batch.labels.tolist() == [1]
    assert [record["reason"] for record in batch.skipped] == kinds

    log = tmp_path / "run" / "skipped.jsonl"
    assert append_skipped(log, batch.skipped) == 5
    assert [row["index"] for row in map(json.loads, log.read_text().splitlines())] == list(range(5))

    # Through a DataLoader with workers the records still reach the main process.
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=1, collate_fn=collate)
    batches = list(loader)
    assert sum(b.num_skipped for b in batches) == 5 and sum(len(b) for b in batches) == 1


def test_collate_pads_with_zeros_and_reports_lengths():
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 12, 1, 9]
    items = [
        {"index": 10 + i, "wav": torch.rand(n, generator=generator) + 0.5, "label": i}
        for i, n in enumerate(lengths)
    ]
    batch = collate(items[:2] + [None] + items[2:])
    assert batch.wav.shape == (4, 12) and batch.wav.dtype == torch.float32
    assert batch.lengths.tolist() == lengths and batch.lengths.dtype == torch.int64
    assert batch.indices.tolist() == [10, 11, 12, 13] and batch.labels.tolist() == [0, 1, 2, 3]
    assert batch.num_skipped == 1
    for row, item in enumerate(items):
        assert torch.equal(batch.wav[row, : lengths[row]], item["wav"])
        assert not batch.wav[row, lengths[row] :].any()
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.wav, batch.wav)
    empty = collate([None, None])
    assert empty.wav.shape == (0, 0) and empty.num_skipped == 2


def test_dataloader_with_bucket_sampler_yields_every_utterance_once(tmp_path):
    from speechssl.data.sampler import DurationBucketSampler

    seconds = [0.2, 0.9, 0.25, 0.8, 0.5, 0.45, 0.3]
    manifest = _write_corpus(tmp_path, seconds)
    dataset = AudioDataset(manifest, max_duration=0.6, label_column="speaker")
    sampler = DurationBucketSampler(
        manifest.durations, max_batch_seconds=1.2, num_buckets=3, max_duration=0.6
    )
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    seen = []
    for batch in loader:
        assert batch.wav.shape[0] * batch.wav.shape[1] <= 1.2 * 16000
        expected = [round(min(seconds[i], 0.6) * 16000) for i in batch.indices.tolist()]
        assert batch.lengths.tolist() == expected
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(len(seconds))) and len(loader) == len(sampler)
