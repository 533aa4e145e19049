"""Frame labels: files beside the manifest keyed by the k-means fingerprint, length checks,
label-aligned crops of the one dataset, padded collate, a batch the masked-prediction
objective accepts, and one call per label iteration (speechssl.targets)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl import audio
from speechssl.cluster import KMeans
from speechssl.data import manifest as manifest_module
from speechssl.data.collate import collate
from speechssl.data.compact import Manifest
from speechssl.data.dataset import AudioDataset
from speechssl.data.frame_labels import (
    check_label_lengths,
    label_paths,
    load_frame_labels,
    read_label_file,
)
from speechssl.data.loaders import DataConfig, make_loader
from speechssl.data.manifest import write_jsonl
from speechssl.encoders import build_encoder
from speechssl.objectives import HubertPretrainModel, MaskedPredictionConfig
from speechssl.targets import (
    TargetConfig,
    ensure_frame_labels,
    fit_kmeans,
    manifest_features,
    mfcc_features,
    mfcc_targets,
)
from speechssl.testing import write_tone


def _manifest(root, name, frequencies, seconds=0.6):
    rows = []
    for index, frequency in enumerate(frequencies):
        path = write_tone(root / f"{name}{index}.wav", seconds, 16000, frequency=frequency)
        rows.append(
            {"id": f"{name}{index}", "audio": str(path), "duration": seconds, "sample_rate": 16000}
        )
    manifest_path = root / f"{name}.jsonl"
    write_jsonl(manifest_path, rows)
    return manifest_path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("frame_labels")
    train = _manifest(root, "train", [200, 500, 900, 1500, 2500])
    valid = _manifest(root, "valid", [300, 2000])
    features = mfcc_features()
    kmeans = fit_kmeans(train, features, 4, seed=0, device="cpu")
    return root, train, valid, features, kmeans


def test_valid_split_is_labelled_with_the_train_kmeans(labelled):
    _, _, valid, features, kmeans = labelled
    path = ensure_frame_labels(valid, kmeans, features, tag="mfcc", label_rate=100)
    assert path == label_paths(valid, "mfcc")[0] and path.parent == valid.parent
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["kmeans_fingerprint"] == kmeans.fingerprint
    labels = read_label_file(path)
    expected = [kmeans.predict(frames) for frames in manifest_features(valid, features)]
    assert len(labels) == 2
    for got, want in zip(labels, expected):
        assert got.tolist() == want.tolist()
        assert got.size == (9600 - 400) // 160 + 1  # Kaldi framing of 0.6 s


def test_labels_are_reused_until_the_kmeans_or_manifest_changes(labelled, tmp_path):
    _, shared, _, features, kmeans = labelled
    train = tmp_path / "train.jsonl"  # a copy: this test edits the manifest
    train.write_text(shared.read_text())
    path = ensure_frame_labels(train, kmeans, features, tag="reuse", label_rate=100)
    path.write_text(path.read_text().replace("\n", " \n"))  # marks the file as ours
    marked = path.read_text()
    assert ensure_frame_labels(train, kmeans, features, tag="reuse", label_rate=100) == path
    assert path.read_text() == marked  # same fingerprint and manifest: reused
    other = KMeans(3, device="cpu", seed=1).fit(torch.cat(list(manifest_features(train, features))))
    ensure_frame_labels(train, other, features, tag="reuse", label_rate=100)
    assert path.read_text() != marked
    assert max(max(line) for line in read_label_file(path) if line.size) < 3
    relabelled = path.read_text()
    train.write_text("".join(train.read_text().splitlines(keepends=True)[:3]))  # manifest edit
    ensure_frame_labels(train, other, features, tag="reuse", label_rate=100)
    assert len(read_label_file(path)) == 3 and path.read_text() != relabelled


def test_mismatched_and_unlabelled_utterances_are_reported_and_dropped(labelled, tmp_path):
    _, _, valid, _, _ = labelled
    rows = [json.loads(line) for line in valid.read_text().splitlines()]
    rows.append({**rows[0], "id": "third"})
    manifest = tmp_path / "m.jsonl"
    write_jsonl(manifest, rows)
    labels = tmp_path / "m.km"
    # 0.6 s at 100 Hz: 58 labels fit; 40 drift by 20 frames; an empty line has no labels
    labels.write_text(" ".join(["1"] * 58) + "\n" + " ".join(["2"] * 40) + "\n\n")
    messages = []
    loaded = load_frame_labels(manifest, labels, 100.0, report=messages.append)
    assert len(loaded.labels) == len(loaded.manifest) == 1
    assert [entry["id"] for entry in loaded.mismatched] == [rows[1]["id"]]
    assert loaded.unlabelled == ["third"]
    assert "dropped 1 utterance" in messages[0] and rows[1]["id"] in messages[1]
    labels.write_text("1 2\n")
    with pytest.raises(ValueError, match="another manifest"):
        load_frame_labels(manifest, labels, 100.0, report=None)


def test_length_check_allows_one_frame_per_second_plus_the_window_edges():
    fits = check_label_lengths([10.0, 10.0, 10.0, 0.5], [988, 1013, 987, 48], 100.0)
    assert fits.tolist() == [True, False, False, True]


def test_crops_start_and_end_on_whole_label_frames(tmp_path):
    # each 160-sample frame holds the constant value label / 100, so the audio says its label
    labels = np.arange(120) % 40
    wav = torch.from_numpy(np.repeat(labels / 100.0, 160).astype(np.float32))
    audio.save(tmp_path / "a.wav", wav, 16000, subtype="FLOAT")
    manifest = Manifest.from_rows(
        [{"id": "a", "audio": str(tmp_path / "a.wav"), "duration": 1.2, "sample_rate": 16000}]
    )
    dataset = AudioDataset(
        manifest, max_duration=0.5, seed=3, frame_labels=[labels], label_rate=100
    )
    starts = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        item = dataset[0]
        assert item["wav"].numel() == 50 * 160 and item["frame_labels"].numel() == 50
        # (T,) -> (50, 160): one row per label frame
        heard = torch.round(item["wav"].reshape(50, 160) * 100).long()
        assert (heard == item["frame_labels"][:, None]).all()
        starts.add(int(item["frame_labels"][0]))
    assert len(starts) > 1  # the crop moves between epochs
    whole = AudioDataset(manifest, frame_labels=[labels], label_rate=100)[0]
    assert whole["wav"].numel() == 19200 and whole["frame_labels"].tolist() == labels.tolist()
    with pytest.raises(ValueError, match="whole number of samples"):
        AudioDataset(manifest, frame_labels=[labels], label_rate=30)


def test_collate_pads_frame_labels_and_moves_their_lengths():
    items = [
        {"index": 0, "wav": torch.ones(320), "frame_labels": torch.tensor([3, 4])},
        None,
        {"index": 1, "wav": torch.ones(480), "frame_labels": torch.tensor([5, 6, 7])},
    ]
    batch = collate(items)
    assert batch.frame_labels.tolist() == [[3, 4, 0], [5, 6, 7]] and batch.labels is None
    assert batch.frame_label_lengths.tolist() == [2, 3] and batch.lengths.tolist() == [320, 480]
    assert batch.num_skipped == 1
    assert batch.to("cpu").frame_label_lengths.tolist() == [2, 3]


def test_loader_batches_train_the_masked_prediction_objective(labelled):
    _, train, _, features, kmeans = labelled
    path = ensure_frame_labels(train, kmeans, features, tag="loader", label_rate=100)
    loaded = load_frame_labels(train, path, 100.0, report=None)
    loader = make_loader(
        loaded.manifest,
        DataConfig(max_batch_seconds=2.0, max_duration=0.4, num_workers=0),
        frame_labels=loaded.labels,
        label_rate=100.0,
    )
    torch.manual_seed(0)
    model = HubertPretrainModel(
        build_encoder("hubert_tiny"), MaskedPredictionConfig(num_classes=[4], label_rate=100)
    )
    seen = 0
    for batch in loader:
        assert batch.frame_labels.shape[1] <= 40 and batch.wav.shape[1] <= 40 * 160
        loss, metrics = model(batch)
        assert torch.isfinite(loss) and 0.3 < float(metrics["mask_fraction"]) < 0.9
        seen += len(batch)
    assert seen == len(loaded.labels)


def test_one_call_labels_both_splits_with_the_train_kmeans_and_reuses_them(labelled, tmp_path):
    _, shared_train, shared_valid, features, _ = labelled
    manifests = []
    for name, source in (("train", shared_train), ("valid", shared_valid)):
        manifests.append(tmp_path / f"{name}.jsonl")
        manifests[-1].write_text(source.read_text())  # copies: the labels go beside them
    config = TargetConfig(mfcc_clusters=4, max_fit_frames=100_000)
    messages = []
    targets = mfcc_targets(manifests, tmp_path / "labels", config, report=messages.append)
    # the same model as fitting on the train split's streamed features
    reference = fit_kmeans(manifests[0], features, 4, max_fit_frames=100_000, device="cpu")
    assert targets.kmeans.fingerprint == reference.fingerprint
    for split, manifest in ((targets.train, manifests[0]), (targets.valid, manifests[1])):
        expected = [reference.predict(frames) for frames in manifest_features(manifest, features)]
        assert [labels.tolist() for labels in split.labels] == [e.tolist() for e in expected]
        assert read_label_file(label_paths(manifest, "iter1_mfcc")[0])[0].tolist() == (
            expected[0].tolist()
        )
    assert len(messages) == 2 and "5 utterances" in messages[0]
    assert targets.summary()["train_utterances"] == 5 and targets.label_rate == 100.0
    # a second call loads the model and the labels instead of recomputing them
    label_file = label_paths(manifests[0], "iter1_mfcc")[0]
    stamp = label_file.stat().st_mtime_ns
    again = mfcc_targets(manifests, tmp_path / "labels", config, report=None)
    assert again.kmeans.fingerprint == targets.kmeans.fingerprint
    assert label_file.stat().st_mtime_ns == stamp


def test_one_dataset_carries_utterance_and_frame_labels_in_separate_fields(tmp_path):
    labels = np.arange(100) % 30
    wav = torch.from_numpy(np.repeat(labels / 100.0, 160).astype(np.float32))  # says its label
    audio.save(tmp_path / "a.wav", wav, 16000, subtype="FLOAT")
    row = {"id": "a", "audio": str(tmp_path / "a.wav"), "duration": 1.0, "sample_rate": 16000}
    manifest = Manifest.from_rows([{**row, "speaker": "s2"}, {**row, "id": "b", "speaker": "s1"}])
    dataset = AudioDataset(
        manifest,
        max_duration=0.3,
        label_column="speaker",
        frame_labels=[labels, labels],
        label_rate=100,
    )
    batch = collate([dataset[0], dataset[1]])
    assert batch.labels.tolist() == [1, 0]  # s1 < s2
    assert batch.frame_labels.shape == (2, 30) and batch.frame_label_lengths.tolist() == [30, 30]
    heard = torch.round(batch.wav.reshape(2, 30, 160) * 100).long()  # (B, T) -> (B, L, hop)
    assert (heard == batch.frame_labels[:, :, None]).all()
    with pytest.raises(ValueError, match="1 label sequences for 2 utterances"):
        AudioDataset(manifest, frame_labels=[labels], label_rate=100)


def test_each_manifest_is_read_once_and_train_audio_decoded_once_for_fit_and_labels(
    labelled, tmp_path, monkeypatch
):
    _, shared_train, shared_valid, _, _ = labelled
    manifests = []
    for name, source in (("train", shared_train), ("valid", shared_valid)):
        manifests.append(tmp_path / f"{name}.jsonl")
        manifests[-1].write_text(source.read_text())
    reads, decodes = [], []
    read_bytes, load, builtin_open = Path.read_bytes, audio.load, open

    def counted_read_bytes(path):
        reads.append(Path(path).name)
        return read_bytes(path)

    def counted_open(path, *args, **kwargs):
        reads.append(Path(path).name)
        return builtin_open(path, *args, **kwargs)

    def counted_load(path, *args, **kwargs):
        decodes.append(Path(path).name)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", counted_read_bytes)
    monkeypatch.setattr(manifest_module, "open", counted_open, raising=False)
    monkeypatch.setattr(audio, "load", counted_load)
    targets = mfcc_targets(
        manifests, tmp_path / "labels", TargetConfig(mfcc_clusters=4), report=None
    )
    assert reads.count("train.jsonl") == 1 and reads.count("valid.jsonl") == 1
    train_files = [Path(targets.train.manifest.audio_path(i)).name for i in range(5)]
    assert sorted(decodes[:5]) == sorted(train_files)  # the fit's pass, kept for the labels
    assert len(decodes) == 5 + 2  # + the valid split, labelled once


def test_a_train_split_beyond_the_fit_budget_is_decoded_again_for_its_labels(
    labelled, tmp_path, monkeypatch
):
    _, shared_train, shared_valid, features, _ = labelled
    manifests = []
    for name, source in (("train", shared_train), ("valid", shared_valid)):
        manifests.append(tmp_path / f"{name}.jsonl")
        manifests[-1].write_text(source.read_text())
    decodes, load = [], audio.load

    def counted_load(path, *args, **kwargs):
        decodes.append(path)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(audio, "load", counted_load)
    # 5 x 58 MFCC frames > 100: the fit keeps a sample, so the labels need a second pass
    config = TargetConfig(mfcc_clusters=4, max_fit_frames=100)
    targets = mfcc_targets(manifests, tmp_path / "labels", config, report=None)
    assert len(decodes) == 5 + 5 + 2
    expected = [
        targets.kmeans.predict(frames) for frames in manifest_features(manifests[0], features)
    ]
    assert [labels.tolist() for labels in targets.train.labels] == [e.tolist() for e in expected]
