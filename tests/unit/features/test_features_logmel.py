"""LogMel: parity with librosa on real speech under padding, and the Griffin-Lim way back."""

import librosa
import numpy as np
import pytest
import torch

from speechssl.features import LogMel, lengths_to_mask

# Stated tolerance of LogMel against log(max(librosa melspectrogram, floor)), in nats, for
# bins within LOW_LEVEL nats of their frame's loudest bin. Far below it (the empty top bands
# of a band-limited recording, 12 nats down) float32 rounding of librosa's own filterbank
# shows in the log (0.9e-3 even with float64 audio), so there the tolerance is looser.
LIBROSA_TOLERANCE = 1e-3
LOW_LEVEL = 10.0
LOW_LEVEL_TOLERANCE = 5e-3


def _librosa_log_mel(logmel: LogMel, wav: torch.Tensor) -> np.ndarray:
    spectrogram = librosa.feature.melspectrogram(
        y=wav.numpy(),
        sr=logmel.sample_rate,
        n_fft=logmel.n_fft,
        hop_length=logmel.hop_length,
        win_length=logmel.win_length,
        fmin=logmel.f_min,
        fmax=logmel.f_max,
        n_mels=logmel.n_mels,
        power=logmel.power,
    )
    return np.log(np.maximum(spectrogram, logmel.floor)).T  # (n_mels, F) -> (F, n_mels)


@pytest.mark.parametrize(
    ("fixture", "options"),
    [
        ("speech_22k", {}),  # Tacotron 2 targets: 80 bins, 1024 / 256, magnitude, 0-8 kHz
        (
            "speech_16k",
            {
                "sample_rate": 16000,
                "n_fft": 2048,
                "hop_length": 512,
                "n_mels": 128,
                "power": 2.0,
                "f_max": None,
            },
        ),  # librosa's own defaults
        (
            "speech_16k",
            {
                "sample_rate": 16000,
                "n_fft": 512,
                "win_length": 400,
                "hop_length": 160,
                "f_min": 20.0,
            },
        ),
    ],
)
def test_logmel_matches_librosa_per_utterance(request, fixture, options, padded):
    wavs = request.getfixturevalue(fixture)
    logmel = LogMel(**options)
    batch, lengths = padded(wavs)
    feats, feat_lengths = logmel(batch, lengths)
    for row, wav in enumerate(wavs):
        reference = _librosa_log_mel(logmel, wav)
        assert int(feat_lengths[row]) == reference.shape[0]
        error = np.abs(feats[row, : reference.shape[0]].numpy() - reference)
        # (F, n_mels): bins within LOW_LEVEL nats of their frame's peak
        loud = reference >= reference.max(axis=1, keepdims=True) - LOW_LEVEL
        assert error[loud].max() <= LIBROSA_TOLERANCE
        assert error.max() <= LOW_LEVEL_TOLERANCE
    assert feats[~lengths_to_mask(feat_lengths, feats.size(1))].eq(0).all()


def test_inverse_reconstructs_a_waveform_with_the_same_mel(speech_22k, padded):
    logmel = LogMel()
    wavs = [wav[:8000] for wav in speech_22k[:2]]  # a third of a second keeps Griffin-Lim quick
    batch, lengths = padded(wavs, pad_value=0.0)
    feats, feat_lengths = logmel(batch, lengths)
    torch.manual_seed(0)
    rebuilt, rebuilt_lengths = logmel.inverse(feats, feat_lengths, n_iter=16)
    assert rebuilt_lengths.tolist() == ((feat_lengths - 1) * logmel.hop_length).tolist()
    again, _ = logmel(rebuilt, rebuilt_lengths)
    frames = int(feat_lengths.min()) - 2  # the edge frames see different zero padding
    error = (again[:, :frames] - feats[:, :frames]).abs().mean()
    # a crossed pair (utterance 0's mel vs utterance 1's) is the chance level
    crossed = (feats[0, :frames] - feats[1, :frames]).abs().mean()
    assert error < 0.5 and error < crossed / 3


def test_inverse_rejects_bad_shapes():
    with pytest.raises(ValueError, match="log_mel"):
        LogMel().inverse(torch.zeros(1, 5, 40), torch.tensor([5]))
    with pytest.raises(ValueError, match="feat_lengths"):
        LogMel().inverse(torch.zeros(1, 5, 80), torch.tensor([6]))
