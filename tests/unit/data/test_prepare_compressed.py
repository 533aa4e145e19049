"""Layouts stored compressed (Ogg Opus in place of .wav/.flac) and unlabelled LibriSpeech.

The embedded demo keeps real speech as Ogg Opus to fit its size budget; each preparer
must list exactly the utterances it lists for the released format, pointing at the
compressed files, and the features of decoded audio must stay close to the original's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from speechssl import testing
from speechssl.data.prepare import prepare
from speechssl.data.prepare.common import audio_extensions, audio_files, resolve_audio
from speechssl.features.fbank import Fbank

pytestmark = pytest.mark.skipif(
    ".opus" not in audio_extensions(), reason="this libsndfile has no Ogg Opus encoder"
)


def _rows(out: Path, manifest: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{manifest}.jsonl").read_text().splitlines()]


OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _compress(root: Path, suffix: str) -> set[str]:
    """Re-encode every ``*suffix`` under ``root`` beside it as Ogg Opus (``.opus``), or as
    Ogg Vorbis (``.ogg``) at rates Opus lacks (22,050 Hz); returns the extensions written."""
    written = set()
    for path in sorted(root.rglob(f"*{suffix}")):
        wav, rate = soundfile.read(path, dtype="float32")
        extension, subtype = (".opus", "OPUS") if rate in OPUS_RATES else (".ogg", "VORBIS")
        soundfile.write(path.with_suffix(extension), wav, rate, format="OGG", subtype=subtype)
        path.unlink()
        written.add(extension)
    return written


def _manifests(src: Path, corpus: str, out: Path) -> dict[str, list[tuple[str, str]]]:
    summary = prepare(corpus, src, out)
    return {
        name: sorted((row["id"], Path(row["audio"]).suffix) for row in _rows(out, name))
        for name in summary["manifests"]
    }


@pytest.mark.parametrize(
    "corpus, make_tree, suffix",
    [
        ("librispeech", testing.make_librispeech_tree, ".flac"),
        ("voxceleb1", testing.make_voxceleb1_tree, ".wav"),
        ("ljspeech", testing.make_ljspeech_tree, ".wav"),
        ("libritts", testing.make_libritts_tree, ".wav"),
        ("speech_commands", testing.make_speech_commands_tree, ".wav"),
    ],
)
def test_compressed_layout_lists_the_same_utterances(tmp_path, corpus, make_tree, suffix):
    src = Path(make_tree(tmp_path / "src"))
    released = _manifests(src, corpus, tmp_path / "released")
    extensions = _compress(src, suffix)
    assert len(extensions) == 1
    compressed = _manifests(src, corpus, tmp_path / "compressed")
    assert compressed.keys() == released.keys()
    for name, rows in released.items():
        assert [utterance for utterance, _ in compressed[name]] == [u for u, _ in rows]
        assert {extension for _, extension in compressed[name]} == extensions
        assert {extension for _, extension in rows} == {suffix}


def test_resolve_audio_prefers_the_named_file_and_falls_back_to_another_format(tmp_path):
    named = testing.write_tone(tmp_path / "a.wav")
    testing.write_tone(tmp_path / "a.flac")
    assert resolve_audio(named) == named
    named.unlink()
    assert resolve_audio(named) == tmp_path / "a.flac"
    assert resolve_audio(tmp_path / "absent.wav") == tmp_path / "absent.wav"
    (tmp_path / "notes.txt").write_text("not audio")
    assert [path.name for path in audio_files(tmp_path, "*")] == ["a.flac"]


def test_librispeech_chapter_without_transcript_is_unlabelled_audio(tmp_path):
    corpus = testing.make_librispeech_tree(tmp_path, subsets=("train-clean-100",))
    chapters = sorted(path for path in (corpus / "train-clean-100").glob("*/*") if path.is_dir())
    unlabelled, labelled = chapters[0], chapters[1:]
    (unlabelled / f"{unlabelled.parent.name}-{unlabelled.name}.trans.txt").unlink()
    summary = prepare("librispeech", corpus, tmp_path / "out")
    rows = _rows(tmp_path / "out", "train-clean-100")
    by_chapter = {}
    for row in rows:
        by_chapter.setdefault(Path(row["audio"]).parent, []).append(row)
    assert len(by_chapter[unlabelled]) == len(audio_files(unlabelled, "*")) > 0
    assert all("text" not in row for row in by_chapter[unlabelled])
    assert all(row["text"] for chapter in labelled for row in by_chapter[chapter])
    assert not summary["skipped"]


def test_kaldi_fbank_parity_holds_on_decoded_opus(tmp_path):
    """Our fbank equals torchaudio's Kaldi fbank on what the decoder returns, and Opus at the
    demo's setting keeps the features close to the lossless original's."""
    rng = np.random.default_rng(0)
    time = np.arange(3 * 16000) / 16000
    # a voiced-like signal: harmonics of a gliding 120-180 Hz pitch plus a little noise
    pitch = 150 + 30 * np.sin(2 * np.pi * 0.5 * time)
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    wav = sum(np.sin(k * phase) / k for k in range(1, 20)) * 0.1
    wav = (wav + 0.005 * rng.standard_normal(time.size)).astype("float32")
    path = tmp_path / "voice.opus"
    # the demo builder's setting (about 30 kbit/s at 16 kHz)
    soundfile.write(path, wav, 16000, format="OGG", subtype="OPUS", compression_level=0.9)
    decoded, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000 and abs(decoded.size - wav.size) <= 0.01 * wav.size

    def reference(signal: np.ndarray) -> torch.Tensor:
        return torchaudio.compliance.kaldi.fbank(
            torch.from_numpy(signal)[None], num_mel_bins=80, dither=0.0
        )

    features, _ = Fbank(n_mels=80)(torch.from_numpy(decoded)[None], torch.tensor([decoded.size]))
    expected = reference(decoded)
    torch.testing.assert_close(features[0, : expected.shape[0]], expected, atol=1e-3, rtol=1e-4)
    original = reference(wav)
    frames = min(original.shape[0], expected.shape[0])
    # lossy coding moves log-mel energies by well under one nat on average here
    assert float((original[:frames] - expected[:frames]).abs().mean()) < 1.0
