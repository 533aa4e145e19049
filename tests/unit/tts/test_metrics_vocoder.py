"""Objective TTS metrics, the Griffin-Lim vocoder and its TorchScript hook, and the plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio
from PIL import Image

from speechssl import audio
from speechssl.data.prepare.common import resolve_audio
from speechssl.demo import demo_path
from speechssl.features import LogMel
from speechssl.tts.metrics import (
    attention_diagonality,
    attention_focus_rate,
    f0_metrics,
    mel_cepstral_distortion_dtw,
    stop_length_error,
    utterance_metrics,
)
from speechssl.tts.plots import plot_alignment, plot_alignments, plot_metric_vs_fraction
from speechssl.tts.vocoder import GriffinLimVocoder, TorchScriptVocoder, load_vocoder

SAMPLE_RATE = 22050


@pytest.fixture(scope="module")
def demo_wav() -> torch.Tensor:
    return audio.load(
        resolve_audio(demo_path("ljspeech") / "wavs" / "LJ001-0002.wav"), sample_rate=SAMPLE_RATE
    )


def _harmonic(f0: float, seconds: float = 0.35, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A 5-harmonic tone with 50 ms of silence at both ends (so voicing is not trivial)."""
    time = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f0 * k * time) / k for k in range(1, 6)) * 0.3
    silence = np.zeros(int(0.05 * rate))
    return np.concatenate([silence, tone, silence]).astype(np.float32)


def test_mcd_dtw_is_zero_for_identical_input_and_grows_with_noise(demo_wav):
    assert mel_cepstral_distortion_dtw(demo_wav, demo_wav, SAMPLE_RATE) == 0.0
    # a pure gain change only moves c0, which MCD leaves out, except where the log-mel
    # floor clips the empty top bands of this band-limited recording (0.09 dB at -6 dB)
    assert mel_cepstral_distortion_dtw(demo_wav, 0.5 * demo_wav, SAMPLE_RATE) < 0.2
    noise = torch.randn(demo_wav.shape, generator=torch.Generator().manual_seed(0))
    distortions = [
        mel_cepstral_distortion_dtw(
            demo_wav, demo_wav + noise * demo_wav.std() * 10 ** (-snr / 20), SAMPLE_RATE
        )
        for snr in (30, 15, 5)
    ]
    assert 0 < distortions[0] < distortions[1] < distortions[2]
    # DTW absorbs a time shift that a frame-by-frame distance would punish
    logmel = LogMel()
    mel = logmel(demo_wav[None], torch.tensor([demo_wav.numel()]))[0][0].T.numpy()  # (80, F)
    stretched = np.repeat(mel, 2, axis=1)  # every frame twice: same content, twice as long
    assert mel_cepstral_distortion_dtw(mel, stretched) == pytest.approx(0.0, abs=1e-9)
    noisy = demo_wav + noise * demo_wav.std() * 0.1
    padded = torch.cat([noisy, noisy])  # the same speech said twice: a stop token that failed
    same_length = utterance_metrics(demo_wav, noisy, SAMPLE_RATE, with_f0=False)
    too_long = utterance_metrics(demo_wav, padded, SAMPLE_RATE, with_f0=False)
    # the length penalty doubles the score; DTW's path through the repeat lowers the
    # per-frame distortion a little (x1.77 on this real clip)
    assert too_long["mcd_dtw_sl_db"] > 1.5 * same_length["mcd_dtw_sl_db"]
    assert too_long["mcd_dtw_db"] < 1.5 * same_length["mcd_dtw_db"]


def test_f0_rmse_is_zero_for_identical_and_100_cents_for_a_semitone():
    options = {"fmin": 100.0, "fmax": 300.0, "resolution": 0.5}
    reference = _harmonic(150.0)
    same = f0_metrics(reference, reference, SAMPLE_RATE, **options)
    assert same["log_f0_rmse_cents"] == 0.0 and same["voicing_decision_error"] == 0.0
    assert same["voiced_pairs"] > 20
    shifted = f0_metrics(reference, _harmonic(150.0 * 2 ** (1 / 12)), SAMPLE_RATE, **options)
    assert shifted["log_f0_rmse_cents"] == pytest.approx(100.0, abs=15.0)
    silence = f0_metrics(
        reference, np.zeros_like(reference), SAMPLE_RATE, alignment="linear", **options
    )
    assert np.isnan(silence["log_f0_rmse_cents"]) and silence["voicing_decision_error"] > 0.5


def test_attention_and_stop_metrics():
    steps, characters = 30, 10
    diagonal = np.zeros((steps, characters))
    diagonal[np.arange(steps), np.arange(steps) * characters // steps] = 1.0
    uniform = np.full((steps, characters), 1.0 / characters)
    assert attention_focus_rate(diagonal) == 1.0
    assert attention_focus_rate(uniform) == pytest.approx(1.0 / characters)
    assert attention_diagonality(diagonal) > 0.95
    assert attention_diagonality(diagonal[:, ::-1]) < 0.35
    # padding is cropped away before averaging
    padded = np.pad(diagonal, ((0, 5), (0, 3)))
    assert attention_focus_rate(padded, steps, characters) == 1.0
    assert stop_length_error([120, 80], [100, 100]) == pytest.approx([0.2, 0.2])
    with pytest.raises(ValueError):
        stop_length_error([1, 2], [1])


def test_utterance_metrics_on_a_demo_utterance(demo_wav):
    results = utterance_metrics(
        demo_wav, demo_wav, SAMPLE_RATE, alignment=torch.eye(20), predicted_frames=100,
        fmin=80.0, fmax=300.0,
    )  # fmt: skip
    assert results["mcd_dtw_db"] == 0.0 and results["log_f0_rmse_cents"] == 0.0
    assert results["mcd_dtw_sl_db"] == 0.0
    assert results["attention_focus_rate"] == 1.0
    reference_frames = 1 + demo_wav.numel() // 256
    assert results["stop_length_error"] == pytest.approx(
        abs(100 - reference_frames) / reference_frames
    )


def test_griffin_lim_round_trip_of_a_demo_utterance(demo_wav):
    logmel = LogMel()
    mel, mel_lengths = logmel(demo_wav[None], torch.tensor([demo_wav.numel()]))
    mel = mel.transpose(1, 2)  # (1, F, 80) -> (1, 80, F)
    vocoder = GriffinLimVocoder(n_iter=16)
    wav, wav_lengths = vocoder(mel, mel_lengths)
    assert wav_lengths.tolist() == [(int(mel_lengths[0]) - 1) * 256]
    again, _ = logmel(wav, wav_lengths)
    frames = min(mel.size(2), again.size(1))
    error = (again[0, :frames].T - mel[0, :, :frames]).abs().mean()
    # stated tolerance: mean |log-mel difference| below 0.35 nats (about 3 dB); a waveform of
    # noise at the same loudness is an order of magnitude further away
    assert float(error) < 0.35
    noise = torch.randn_like(wav) * wav.std()
    noise_mel, _ = logmel(noise, wav_lengths)
    assert float((noise_mel[0, :frames].T - mel[0, :, :frames]).abs().mean()) > 3 * float(error)


def test_pseudo_inverse_matches_torchaudio_inverse_mel_scale():
    vocoder = GriffinLimVocoder()
    mel = torch.rand(80, 7) + 0.01
    reference = torchaudio.transforms.InverseMelScale(
        n_stft=513, n_mels=80, sample_rate=22050, f_max=8000.0, norm="slaney",
        mel_scale="slaney",
    )(mel)  # fmt: skip
    assert torch.allclose(vocoder.linear_magnitude(mel.log()), reference, rtol=1e-4, atol=1e-3)


class _UpsampleVocoder(torch.nn.Module):
    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        # (B, n_mels, F) -> (B, 1, F * 256): a stand-in "neural vocoder"
        return log_mel.mean(dim=1, keepdim=True).repeat_interleave(256, dim=2)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")
def test_torchscript_vocoder_hook_and_its_errors(tmp_path):
    path = tmp_path / "vocoder.pt"
    torch.jit.save(torch.jit.script(_UpsampleVocoder()), str(path))
    vocoder = load_vocoder(path)
    assert isinstance(vocoder, TorchScriptVocoder) and vocoder.sample_rate == 22050
    wav, wav_lengths = vocoder(torch.zeros(2, 80, 10), torch.tensor([10, 4]))
    assert wav.shape == (2, 2560) and wav_lengths.tolist() == [2560, 1024]
    assert isinstance(load_vocoder(None), GriffinLimVocoder)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_vocoder(tmp_path / "missing.pt")
    state_dict_path = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(2)}, state_dict_path)
    with pytest.raises(ValueError, match="not a TorchScript module"):
        load_vocoder(state_dict_path)
    with pytest.raises(ValueError, match="mel_lengths"):
        vocoder(torch.zeros(1, 80, 10), torch.tensor([11]))


def test_plots_write_readable_images(tmp_path):
    rows = [
        {"fraction": fraction, "bin": name, "mcd_dtw_db": 9 - 3 * fraction - offset}
        for fraction in (0, 0.125, 0.25, 0.5, 1)
        for name, offset in (("low", 0.0), ("high", 1.0), ("ood", -1.0))
    ]
    metric_path = plot_metric_vs_fraction(rows, "mcd_dtw_db", tmp_path / "mcd.png")
    alignment = torch.softmax(torch.randn(40, 15), dim=1)
    single = plot_alignment(alignment, tmp_path / "align.png", title="LJ001-0002", text="hi")
    grid = plot_alignments(
        [alignment, alignment.flip(1)],
        ["0", "1"],
        tmp_path / "grid.png",
        sizes=[(40, 15), (30, 10)],
    )
    for path in (metric_path, single, grid):
        with Image.open(path) as image:
            assert image.size[0] > 300 and image.size[1] > 200
    with pytest.raises(ValueError, match="no 'f0'"):
        plot_metric_vs_fraction(rows, "f0", tmp_path / "f0.png")
