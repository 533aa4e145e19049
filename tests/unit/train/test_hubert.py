"""speechssl.train.hubert: the pre-training audio, the objective of each arm, and the
iterations (teacher, hidden targets, arms) on a fabricated corpus."""

import pytest

from speechssl.data.manifest import read_jsonl
from speechssl.encoders import PRESETS
from speechssl.objectives import MaskedPredictionConfig
from speechssl.targets import TargetConfig
from speechssl.testing import make_librispeech_tree, make_voxceleb1_tree
from speechssl.train.config import OptimConfig, TrainerConfig
from speechssl.train.hubert import (
    PretrainingData,
    TrainingSetup,
    evenly_spaced,
    masked_prediction_objective,
    pretrain_iterations,
    write_if_changed,
)
from speechssl.typed import to_plain


def test_evenly_spaced_keeps_the_ends_of_a_concatenation():
    rows = [f"libri{i}" for i in range(6)] + [f"vox{i}" for i in range(6)]
    subset = evenly_spaced(rows, 4)
    assert subset == ["libri0", "libri3", "vox0", "vox3"]  # both corpora, not the first 4
    assert evenly_spaced(rows, 0) == rows
    assert evenly_spaced(rows, 50) == rows


def test_write_if_changed_leaves_an_identical_manifest_untouched(tmp_path):
    rows = [{"id": "a", "audio": "/a.wav", "duration": 1.0, "sample_rate": 16000}]
    path = write_if_changed(tmp_path / "train.jsonl", rows)
    first = path.stat().st_mtime_ns
    path.touch()  # a rewrite would change the time again; an identical call must not
    touched = path.stat().st_mtime_ns
    write_if_changed(path, rows)
    assert path.stat().st_mtime_ns == touched >= first
    write_if_changed(path, [*rows, {**rows[0], "id": "b"}])
    assert [row["id"] for row in read_jsonl(path)] == ["a", "b"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    libri = make_librispeech_tree(root, speakers_per_subset=2, utterances_per_chapter=3)
    vox = make_voxceleb1_tree(root, num_speakers=3, seconds=0.5)
    # trials of two speakers only (the fixture's trials use all): the others may pre-train
    trials = (vox / "veri_test.txt").read_text().splitlines()
    kept = [line for line in trials if "id10002" not in line and "id10003" not in line]
    (vox / "veri_test.txt").write_text("\n".join(kept) + "\n")
    return libri, vox


def test_pretraining_manifests_join_speaker_audio_without_verification_speakers(corpora, tmp_path):
    libri, vox = corpora
    data = PretrainingData(
        "librispeech",
        str(libri),
        ["train-clean-100"],
        ["dev-clean"],
        speaker_corpus="voxceleb1",
        speaker_src=str(vox),
        speaker_splits=["train", "test"],
    )
    train, valid = data.manifests(tmp_path / "data")
    assert (train, valid) == (
        tmp_path / "data/pretrain/train.jsonl",
        tmp_path / "data/pretrain/valid.jsonl",
    )
    train_rows, valid_rows = list(read_jsonl(train)), list(read_jsonl(valid))
    verification = {
        row["speaker"] for row in read_jsonl(tmp_path / "data/voxceleb1/verification.jsonl")
    }
    vox_train = {
        row["id"]
        for split in ("train", "test")
        for row in read_jsonl(tmp_path / f"data/voxceleb1/{split}.jsonl")
        if row["speaker"] not in verification
    }
    libri_train = {
        row["id"] for row in read_jsonl(tmp_path / "data/librispeech/train-clean-100.jsonl")
    }
    assert verification and vox_train and libri_train
    assert {row["id"] for row in train_rows} == libri_train | vox_train
    assert not {row["speaker"] for row in train_rows} & verification
    assert len(valid_rows) == 2 * 3  # dev-clean: 2 speakers x 3 utterances
    # a second call with the same sources leaves both files (and so their labels) alone
    stamps = [path.stat().st_mtime_ns for path in (train, valid)]
    assert data.manifests(tmp_path / "data") == (train, valid)
    assert [path.stat().st_mtime_ns for path in (train, valid)] == stamps
    # a cap keeps evenly spaced rows of both corpora
    capped, _ = PretrainingData(**{**vars(data), "max_utterances": 4}).manifests(tmp_path / "data")
    ids = [row["id"] for row in read_jsonl(capped)]
    assert len(ids) == 4 and set(ids) & libri_train and set(ids) & vox_train


def test_speaker_splits_need_the_speaker_corpus(corpora, tmp_path):
    data = PretrainingData(
        "librispeech", str(corpora[0]), ["train-clean-100"], [], speaker_splits=["train"]
    )
    with pytest.raises(ValueError, match="speaker_corpus"):
        data.manifests(tmp_path)


def test_each_arm_switches_only_mixing_and_contrastive():
    sat = {
        "name": "masked_prediction",
        "mixing": {"enabled": True},
        "contrastive": {"enabled": True},
    }
    base = masked_prediction_objective(sat, 8, 50.0)
    assert isinstance(base, MaskedPredictionConfig)
    assert (base.num_classes, base.label_rate) == ([8], 50.0)
    assert base.mixing.enabled and base.contrastive.enabled  # as configured
    arm = masked_prediction_objective(sat, 8, 50.0, {"mixing": True, "contrastive": False})
    assert arm.mixing.enabled and not arm.contrastive.enabled
    assert to_plain(arm.mixing) == to_plain(base.mixing)
    assert {k: v for k, v in to_plain(arm).items() if k != "contrastive"} == {
        k: v for k, v in to_plain(base).items() if k != "contrastive"
    }
    with pytest.raises(ValueError, match="masked prediction, not predictive_coding"):
        masked_prediction_objective({"name": "predictive_coding"}, 8, 50.0)


def test_two_iterations_then_every_arm_on_the_same_targets(corpora, tmp_path):
    libri, _ = corpora
    data = PretrainingData("librispeech", str(libri), ["train-clean-100"], ["dev-clean"])
    setup = TrainingSetup(
        encoder=PRESETS["hubert_tiny"](),
        data={"max_batch_seconds": 2.0, "max_duration": 0.3, "num_workers": 0},
        trainer=TrainerConfig(
            max_steps=2, eval_every=2, checkpoint_every=2, log_every=1, num_workers=0
        ),
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
        seed=0,
    )
    arms = {
        "hubert": {"mixing": False, "contrastive": False},
        "sat": {"mixing": True, "contrastive": True},
    }
    labels = TargetConfig(iterations=2, mfcc_clusters=4, hidden_layer=1, hidden_clusters=3)
    checkpoints, summary = pretrain_iterations(
        data,
        labels,
        {"name": "masked_prediction", "contrastive": {"layer": 1}, "final_dim": 16},
        setup,
        tmp_path,
        arms,
    )
    assert set(checkpoints) == {"hubert", "sat"}
    assert all(path.is_file() for path in checkpoints.values())
    assert (
        summary["iteration1"]["num_clusters"] == 4 and summary["iteration1"]["label_rate"] == 100.0
    )
    assert (
        summary["iteration2"]["num_clusters"] == 3 and summary["iteration2"]["label_rate"] == 50.0
    )
    assert summary["iteration2"]["teacher"].startswith(str(tmp_path / "pretrain" / "iteration1"))
    assert (summary["hubert"]["mixing"], summary["hubert"]["contrastive"]) == (False, False)
    assert (summary["sat"]["mixing"], summary["sat"]["contrastive"]) == (True, True)
    assert all("valid/loss" in summary[arm] for arm in arms)
    assert set(summary["timings"]) == {
        "labels_iteration1_s",
        "iteration1_model_and_labels_iteration2_s",
        "pretrain_hubert_s",
        "pretrain_sat_s",
    }
