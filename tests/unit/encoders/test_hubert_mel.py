"""Mel-input HuBERT (``front_end="fbank"``): frames line up with the label files, and the
encoder protocol (masked pre-training, freezing, conversions) holds for the new front end."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from speechssl import audio
from speechssl.data.manifest import write_jsonl
from speechssl.demo import demo_path
from speechssl.encoders import build_encoder
from speechssl.encoders.wav2vec2.convert.torchaudio_format import to_torchaudio
from speechssl.objectives import HubertPretrainModel, MaskedPredictionConfig, align_labels
from speechssl.targets import (
    MFCC_LABEL_RATE,
    TargetConfig,
    hidden_targets,
    mfcc_features,
    mfcc_targets,
)

AUDIO_SUFFIXES = {".opus", ".ogg", ".flac", ".wav"}
LENGTHS = [560, 1999, 8000, 16000, 16123, 33333]  # samples: 2 to 207 MFCC frames


@pytest.mark.parametrize("stack_frames", [2, 4])
def test_frames_match_100_hz_mfcc_labels_for_several_lengths(stack_frames):
    torch.manual_seed(0)
    encoder = build_encoder("hubert_mel_tiny", stack_frames=stack_frames).eval()
    assert encoder.frame_rate == 100.0 / stack_frames  # 50 Hz (MelHuBERT), 25 Hz (Fast-HuBERT)
    model = HubertPretrainModel(
        encoder, MaskedPredictionConfig(num_classes=[5], label_rate=MFCC_LABEL_RATE)
    )
    assert model.frame_rate == encoder.frame_rate
    mfcc = mfcc_features()
    for samples in LENGTHS:
        wav, lengths = torch.randn(1, samples), torch.tensor([samples])
        num_labels = int(mfcc(wav, lengths)[1][0])  # what the iteration-1 label file holds
        features, frame_lengths = encoder.extract_features(wav, lengths)
        num_frames = int(frame_lengths[0])
        assert features.shape[1] == num_frames == int(encoder.output_lengths(lengths)[0])
        # every output frame is one whole stack of the label file's frames
        assert num_frames == num_labels // stack_frames, samples
        labels = torch.arange(num_labels)[None]
        aligned, covered = align_labels(
            labels, None, frame_lengths, num_frames, MFCC_LABEL_RATE, encoder.frame_rate
        )
        # no frame is dropped, and frame t takes the label of its stack's first 10 ms frame
        assert int(covered[0]) == num_frames
        assert (
            aligned[0, :num_frames, 0].tolist()
            == list(range(0, num_labels, stack_frames))[:num_frames]
        )


def test_mel_encoder_labels_on_real_demo_speech_come_at_its_frame_rate_without_drift(tmp_path):
    """Iteration 2 on four real LibriSpeech clips of the demo corpus: the mel encoder's
    layer-1 labels are declared at its frame rate, none is dropped for drift, each
    utterance has exactly as many labels as the encoder has frames, and masked
    prediction on them covers every frame (as the 100 Hz MFCC labels do too)."""
    torch.manual_seed(0)
    encoder = build_encoder("hubert_mel_tiny").eval()
    root = demo_path("librispeech") / "train-clean-100"
    files = [path for path in sorted(root.rglob("*")) if path.suffix in AUDIO_SUFFIXES][:4]
    assert len(files) == 4
    wavs = [audio.load(path, sample_rate=16000) for path in files]
    rows = [
        {"id": path.stem, "audio": str(path), "duration": wav.numel() / 16000, "sample_rate": 16000}
        for path, wav in zip(files, wavs)
    ]
    manifests = (tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    write_jsonl(manifests[0], rows)
    write_jsonl(manifests[1], rows[:2])
    config = TargetConfig(mfcc_clusters=4, hidden_layer=1, hidden_clusters=3)
    iteration1 = mfcc_targets(manifests, tmp_path, config, report=None)
    targets = hidden_targets(
        manifests,
        tmp_path,
        encoder,
        config,
        label_rate=encoder.frame_rate,
        teacher_name="mel",
        report=None,
    )
    summary = targets.summary()
    assert summary["label_rate"] == 50.0 and summary["train_utterances"] == 4
    assert summary["dropped_mismatched"] == iteration1.summary()["dropped_mismatched"] == 0
    lengths = torch.tensor([wav.numel() for wav in wavs])
    frames = encoder.output_lengths(lengths)
    assert [values.size for values in targets.train.labels] == frames.tolist()
    wav = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    for labels, rate in (
        (targets.train.labels, encoder.frame_rate),
        (iteration1.train.labels, 100.0),
    ):
        model = HubertPretrainModel(
            encoder, MaskedPredictionConfig(num_classes=[4], label_rate=rate)
        )
        padded = torch.nn.utils.rnn.pad_sequence(
            [torch.from_numpy(values) for values in labels], batch_first=True
        )
        label_lengths = torch.tensor([values.size for values in labels])
        output = model.forward_logits(wav, lengths, padded, label_lengths)
        assert output.frame_lengths.tolist() == frames.tolist()


def test_masked_pretraining_trains_the_mel_encoder_without_a_feature_penalty():
    torch.manual_seed(0)
    encoder = build_encoder("hubert_mel_tiny")
    model = HubertPretrainModel(encoder, MaskedPredictionConfig(num_classes=[6], label_rate=100.0))
    wav, lengths = torch.randn(2, 16000), torch.tensor([16000, 11000])
    batch = SimpleNamespace(
        wav=wav,
        lengths=lengths,
        frame_labels=torch.randint(0, 6, (2, 98)),
        frame_label_lengths=torch.tensor([98, 67]),
    )
    loss, metrics = model(batch)
    assert float(metrics["feature_penalty"]) == 0.0  # filterbanks have no weights to keep small
    assert 0.5 < float(metrics["mask_fraction"]) < 1.0
    loss.backward()
    assert encoder.mask_embedding.grad is not None and encoder.mask_embedding.grad.any()
    assert encoder.feature_projection.projection.weight.grad.any()
    assert not list(encoder.feature_extractor.parameters())
    # the encoder's own forward (what downstream heads call) matches the pieces
    encoder.eval()
    with torch.no_grad():
        whole = encoder(wav, lengths)
        features, frame_lengths = encoder.extract_features(wav, lengths)
        pieces = encoder.encode(encoder.project(features), frame_lengths)
    assert torch.equal(whole.last_hidden_state, pieces.last_hidden_state)
    assert whole.lengths.tolist() == [49, 33]


def test_a_frozen_front_end_keeps_its_running_statistics_in_training():
    torch.manual_seed(0)
    encoder = build_encoder("hubert_mel_tiny", normalization="global")
    wav, lengths = torch.randn(2, 8000), torch.tensor([8000, 8000])
    encoder(wav, lengths)  # train mode: the corpus statistics move
    normalize = encoder.feature_extractor.front_end.normalize
    count = float(normalize.count)
    assert count > 0
    encoder.freeze_feature_extractor()
    encoder.train()
    encoder(wav * 3.0, lengths)
    assert float(normalize.count) == count


def test_conversions_to_waveform_cnn_formats_are_refused_in_one_line():
    encoder = build_encoder("hubert_mel_tiny")
    with pytest.raises(ValueError, match="fbank front-end encoder has no torchaudio counterpart"):
        to_torchaudio(encoder)
    with pytest.raises(ValueError, match="front_end must be one of"):
        build_encoder("hubert_mel_tiny", front_end="mel")
    with pytest.raises(ValueError, match="stack_frames"):
        build_encoder("hubert_mel_tiny", stack_frames=0)
    with pytest.raises(ValueError, match="filterbanks expect 16000 Hz"):
        HubertPretrainModel(encoder, MaskedPredictionConfig(num_classes=[4], sample_rate=8000))
    assert np.isclose(build_encoder("hubert_tiny").frame_rate, 50.0)


def _pooled_input_layer(encoder, wav: torch.Tensor) -> torch.Tensor:
    """Mean over frames of hidden state 0 (what a pooled probe's first layer reads): (D,)."""
    with torch.no_grad():
        return encoder(wav[None], torch.tensor([wav.numel()])).hidden_states[0][0].mean(0)


def test_the_default_front_end_keeps_each_recordings_average_spectrum():
    # a speaker's average spectrum is the first cue a pooled probe reads; per-bin
    # per-utterance CMVN zeroes it, so two stationary noises of different colour (white and
    # low-passed) would look alike after pooling (this made a random hubert_mel_small score
    # 66.8 % speaker ID on the demo instead of 91.9 %)
    torch.manual_seed(0)
    encoder = build_encoder("hubert_mel_tiny").eval()
    white = [torch.randn(16000) for _ in range(2)]
    # a 9-tap moving average: the same noise, darker (about -20 dB near 8 kHz)
    kernel = torch.ones(1, 1, 9) / 9
    dark = [torch.nn.functional.conv1d(w[None, None], kernel, padding=4)[0, 0] for w in white]
    pooled_white = [_pooled_input_layer(encoder, w) for w in white]
    pooled_dark = _pooled_input_layer(encoder, dark[0])
    same_colour = (pooled_white[0] - pooled_white[1]).norm()
    other_colour = (pooled_white[0] - pooled_dark).norm()
    assert other_colour > 5 * same_colour
    # the per-utterance CMVN that is still offered erases exactly this difference
    torch.manual_seed(0)
    per_utterance = build_encoder("hubert_mel_tiny", normalization="utterance").eval()
    erased = (
        _pooled_input_layer(per_utterance, white[0]) - _pooled_input_layer(per_utterance, dark[0])
    ).norm()
    assert erased < other_colour / 5
