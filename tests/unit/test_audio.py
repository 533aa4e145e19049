"""speechssl.audio: soundfile I/O, mono mixing, resampling, bad files."""

import math

import numpy as np
import pytest
import soundfile
import torch
import torchaudio.functional as AF

from speechssl import audio


def _sine(seconds: float, sample_rate: int, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * math.pi * frequency * t)).astype(np.float32)


def test_load_returns_mono_float32_at_file_rate(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, _sine(0.5, 16000), 16000, subtype="PCM_16")
    wav = audio.load(path)
    assert wav.dtype == torch.float32 and wav.shape == (8000,)
    assert abs(float(wav.abs().max()) - 0.5) < 1e-3


def test_multichannel_is_averaged_to_mono(tmp_path):
    left, right = _sine(0.2, 16000, 300), _sine(0.2, 16000, 700)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, right], axis=1), 16000)
    wav = audio.load(path)
    expected = torch.from_numpy((left + right) / 2)
    assert torch.allclose(wav, expected, atol=1e-4)


def test_resampling_matches_torchaudio(tmp_path):
    path = tmp_path / "lj.wav"
    signal = _sine(0.3, 22050, 1000)
    soundfile.write(path, signal, 22050, subtype="FLOAT")
    wav = audio.load(path, sample_rate=16000)
    reference = AF.resample(torch.from_numpy(signal), 22050, 16000)
    assert wav.shape == reference.shape == (round(0.3 * 16000),)
    assert torch.allclose(wav, reference, atol=1e-6)
    assert audio.load(path, sample_rate=None).shape == (len(signal),)


def test_window_read(tmp_path):
    path = tmp_path / "w.wav"
    signal = np.linspace(-1, 1, 1000, dtype=np.float32)
    soundfile.write(path, signal, 8000, subtype="FLOAT")
    wav = audio.load(path, sample_rate=None, start=100, num_samples=50)
    assert torch.allclose(wav, torch.from_numpy(signal[100:150]))


def test_info_reports_header(tmp_path):
    path = tmp_path / "i.wav"
    soundfile.write(path, _sine(1.25, 24000), 24000)
    header = audio.info(path)
    assert (header.sample_rate, header.num_samples, header.channels) == (24000, 30000, 1)
    assert header.duration == pytest.approx(1.25)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "missing"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"this is not audio at all" * 10), "unreadable"),
    ],
)
def test_bad_files_raise_audio_error_with_reason(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(audio.AudioError) as error:
        audio.load(path)
    assert error.value.reason == reason
    assert str(path) in str(error.value)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "t.wav"
    soundfile.write(path, _sine(1.0, 16000), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header still claims 1 s
    with pytest.raises(audio.AudioError) as error:
        audio.load(path)
    assert error.value.reason in {"truncated", "unreadable"}


def test_non_finite_samples_are_refused(tmp_path):
    path = tmp_path / "nan.wav"
    signal = _sine(0.2, 16000)
    signal[100] = np.nan
    soundfile.write(path, signal, 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError) as error:
        audio.load(path)
    assert error.value.reason == "non-finite"
    assert torch.isnan(audio.load(path, check_finite=False)).any()


def test_save_round_trip(tmp_path):
    wav = torch.from_numpy(_sine(0.1, 16000))
    audio.save(tmp_path / "sub" / "x.flac", wav, 16000)
    assert torch.allclose(audio.load(tmp_path / "sub" / "x.flac"), wav, atol=1e-4)
