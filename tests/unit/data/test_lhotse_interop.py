"""lhotse interop: a CutSet written by lhotse becomes a manifest (``speechssl prepare
lhotse``), and a Shar directory written by lhotse streams through ShardStream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from speechssl.data.prepare import prepare
from speechssl.data.prepare.common import audio_files
from speechssl.data.shards import ShardLoader, ShardStream, open_source
from speechssl.demo import demo_path

lhotse = pytest.importorskip("lhotse")
EMOTIONS = ("neu", "hap", "ang")


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    """Six demo LibriSpeech clips as lhotse cuts with speaker, text and an emotion, plus
    one cut that is only the first second of its recording."""
    files = audio_files(demo_path("librispeech") / "train-clean-100", "**/*")[:6]
    made = []
    for number, path in enumerate(files):
        recording = lhotse.Recording.from_file(str(path))
        cut = recording.to_cut()
        cut.supervisions = [
            lhotse.SupervisionSegment(
                id=recording.id,
                recording_id=recording.id,
                start=0.0,
                duration=recording.duration,
                speaker=path.parts[-3],
                text=f"utterance {number}",
                custom={"emotion": EMOTIONS[number % 3]},
            )
        ]
        made.append(cut)
    partial = made[0].truncate(duration=1.0)
    partial.id = "partial"
    cut_set = lhotse.CutSet.from_cuts([*made, partial])
    path = tmp_path_factory.mktemp("cuts") / "demo_cuts.jsonl.gz"
    cut_set.to_file(path)
    return cut_set, path


def test_prepare_lhotse_reads_recordings_and_supervisions(cuts, tmp_path):
    cut_set, path = cuts
    summary = prepare("lhotse", path, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "demo_cuts.jsonl").read_text().splitlines()]
    assert summary["skipped"] == {"partial-recording": 1}
    assert len(rows) == 6
    by_id = {cut.id: cut for cut in cut_set}
    for row in rows:
        cut = by_id[row["id"]]
        assert row["audio"] == str(cut.recording.sources[0].source)
        assert row["duration"] == pytest.approx(cut.duration, abs=1e-3)
        assert row["speaker"] == cut.supervisions[0].speaker
        assert row["text"] == cut.supervisions[0].text
        assert row["label"] == cut.supervisions[0].custom["emotion"]
    assert summary["manifests"]["demo_cuts"]["labels"] == {"ang": 2, "hap": 2, "neu": 2}


def test_prepare_lhotse_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "cuts.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="cannot read .* as a CutSet"):
        prepare("lhotse", bad, tmp_path / "out")


def test_stream_reads_a_shar_directory_written_by_lhotse(cuts, tmp_path):
    cut_set, _ = cuts
    # the first 2 s of each clip keep lhotse's FLAC encoding short
    whole = cut_set.filter(lambda cut: cut.id != "partial").truncate(
        max_duration=2.0, offset_type="start"
    )
    whole.to_shar(tmp_path, fields={"recording": "flac"}, shard_size=2)
    source = open_source(tmp_path)
    assert [shard["samples"] for shard in source.shards] == [2, 2, 2]
    ids = [sample.meta["id"] for k in range(3) for sample in source.read(k, 0, None)]
    assert ids == [cut.id for cut in whole]
    first = next(source.read(0, 0, None)).meta
    assert first["label"] == "neu" and first["text"] == "utterance 0" and "speaker" in first
    stream = ShardStream([tmp_path], max_batch_seconds=60.0, max_duration=None, seed=1)
    expected = {number: cut.load_audio()[0] for number, cut in enumerate(whole)}
    seen = []
    for batch in ShardLoader(stream):
        for row, number in enumerate(batch.indices.tolist()):
            wav = batch.wav[row, : int(batch.lengths[row])]
            # lhotse stored 16-bit FLAC: equal to the source's decoding within a 16-bit step
            torch.testing.assert_close(wav, torch.from_numpy(expected[number]), atol=1e-4, rtol=0)
            seen.append(number)
    assert sorted(seen) == list(range(6))
    assert np.isclose(stream.durations.sum(), sum(cut.duration for cut in whole), atol=1e-3)
