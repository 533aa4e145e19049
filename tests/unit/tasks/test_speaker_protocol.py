"""Speaker identification / verification runners on tones whose pitch is the "speaker"."""

import pytest
import torch

from speechssl.data.compact import Manifest
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.heads import ClassifierHeadConfig
from speechssl.tasks.classification import TransferConfig
from speechssl.tasks.speaker import Trial
from speechssl.tasks.speaker_protocol import (
    pooled_embeddings,
    run_speaker_identification,
    run_speaker_verification,
)
from speechssl.testing import write_tone

PITCH = {"low": 250.0, "mid": 900.0, "high": 2600.0}


def _rows(root, split, per_speaker, offset=0):
    rows = []
    for speaker, pitch in PITCH.items():
        for number in range(per_speaker):
            seconds = 0.3 + 0.1 * ((number + offset) % 3)  # varied lengths -> padding
            name = f"{speaker}/{split}{number}"
            path = write_tone(
                root / f"{speaker}_{split}{number}.wav",
                seconds,
                16000,
                frequency=pitch * (1 + 0.02 * number),
            )
            rows.append(
                {
                    "id": name,
                    "audio": str(path),
                    "duration": seconds,
                    "sample_rate": 16000,
                    "speaker": speaker,
                }
            )
    return Manifest.from_rows(rows)


def test_pooled_embeddings_ignore_padding(tmp_path):
    manifest = _rows(tmp_path, "pad", 2)
    encoder = FbankUpstream(40)
    batched = pooled_embeddings(encoder, manifest)
    assert batched.shape == (6, 40)
    for index in range(len(manifest)):
        alone = pooled_embeddings(encoder, manifest.subset([index]))
        torch.testing.assert_close(batched[index], alone[0], atol=1e-5, rtol=1e-5)


def test_identification_beats_chance_and_verification_separates_speakers(tmp_path):
    train, dev, test = (
        _rows(tmp_path, "train", 4),
        _rows(tmp_path, "dev", 1, 1),
        _rows(tmp_path, "test", 2, 2),
    )
    config = TransferConfig(epochs=30, lr=5e-3, warmup_epochs=0.5)
    result = run_speaker_identification(
        lambda: FbankUpstream(40),
        train,
        dev,
        test,
        ClassifierHeadConfig(projector_dim=16),
        config,
        tmp_path / "sid",
    )
    assert result["num_speakers"] == 3 and result["num_test"] == 6
    assert result["top1"] == 1.0  # chance: 1/3
    trials = [
        Trial(1, "low/test0", "low/test1"),
        Trial(1, "high/test0", "high/test1"),
        Trial(0, "low/test0", "high/test1"),
        Trial(0, "mid/test0", "high/test0"),
        Trial(1, "mid/test0", "mid/test1"),
        Trial(0, "low/test1", "mid/test1"),
    ]
    verification, embeddings = run_speaker_verification(lambda: FbankUpstream(40), test, trials)
    assert verification["eer"] == 0.0 and verification["num_trials"] == 6
    assert embeddings.shape == (6, 40)


def test_closed_set_and_missing_trial_utterances_are_rejected(tmp_path):
    train = _rows(tmp_path, "train", 1)
    stranger = Manifest.from_rows([{**train.row(0), "id": "x", "speaker": "stranger"}])
    with pytest.raises(ValueError, match="closed set"):
        run_speaker_identification(
            lambda: FbankUpstream(40),
            train,
            None,
            stranger,
            ClassifierHeadConfig(),
            TransferConfig(epochs=1),
            tmp_path / "sid",
        )
    with pytest.raises(ValueError, match="no embedding"):
        run_speaker_verification(
            lambda: FbankUpstream(40), train, [Trial(1, "low/train0", "nobody")]
        )
