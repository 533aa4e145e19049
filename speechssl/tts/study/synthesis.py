"""Synthesis and scoring: free-running Tacotron 2 synthesis of the test sentences, vocoded
WAVs, and per-sentence metrics (:data:`METRICS`) against the held-out recordings."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechssl import audio
from speechssl.tts.metrics import (
    attention_diagonality,
    attention_focus_rate,
    f0_metrics,
    mel_cepstral_distortion_dtw,
    pitch_track,
    stop_length_error,
)
from speechssl.tts.model import TacotronConfig, TacotronTTS
from speechssl.tts.study.sets import TestSentence
from speechssl.tts.text import CharacterFrontend

# per-sentence metrics, in table order; OOD sentences have no reference: attention and
# stop-length metrics only
METRICS = (
    "mcd_dtw_db",
    "mcd_dtw_sl_db",
    "log_f0_rmse_cents",
    "voicing_decision_error",
    "attention_focus_rate",
    "attention_diagonality",
    "stop_length_error",
)


def frames_per_character(rows: Sequence[Mapping], model_config: TacotronConfig) -> float:
    """Median mel frames per character (EOS included) of ``rows``: the speaking rate used to
    expect a length for sentences without a recording."""
    encoder = CharacterFrontend(normalize=model_config.normalize_text)
    rates = []
    for row in rows:
        frames = (
            1 + int(float(row["duration"]) * model_config.sample_rate) // model_config.hop_length
        )
        rates.append(frames / len(encoder.encode(row["text"])))
    if not rates:
        raise ValueError("no rows to measure the speaking rate on")
    return float(np.median(rates))


@dataclass
class Reference:
    """A held-out sentence's recording, loaded once for every fraction's scoring."""

    wav: np.ndarray  # (T,) at the model's sample rate
    frames: int  # mel frames of the recording: 1 + T // hop_length
    pitch: tuple[np.ndarray, np.ndarray] | None  # pyin (f0, voiced), each (frames,)


def _load_reference(job: tuple) -> Reference:
    path, sample_rate, n_fft, hop_length, with_f0 = job
    wav = audio.load(path, sample_rate=sample_rate).numpy()
    pitch = None
    if with_f0:
        pitch = pitch_track(wav, sample_rate, frame_length=n_fft, hop_length=hop_length)
    return Reference(wav, 1 + len(wav) // hop_length, pitch)


def load_references(
    sentences: Sequence[TestSentence], config: TacotronConfig, *, with_f0: bool = True, mapper=map
) -> dict[str, Reference]:
    """``{id: Reference}`` for the sentences with a recording (pyin tracked here once, not
    once per fraction). ``mapper``: ``map`` or an executor's ``map`` to spread the work."""
    jobs = [
        (sentence.reference, config.sample_rate, config.n_fft, config.hop_length, with_f0)
        for sentence in sentences
        if sentence.in_domain
    ]
    ids = [sentence.id for sentence in sentences if sentence.in_domain]
    return dict(zip(ids, mapper(_load_reference, jobs), strict=True))


def _score_against_reference(job: tuple) -> dict:
    """MCD-DTW(-SL) of a predicted mel and F0 metrics of its WAV against a reference
    (a module-level function so that a process pool can run it)."""
    reference, mel, wav, expected_frames, frames, config, with_f0 = job
    mcd, path = mel_cepstral_distortion_dtw(
        reference.wav,
        mel,
        config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        return_path=True,
    )
    length_ratio = max(expected_frames, frames) / max(min(expected_frames, frames), 1)
    scores = {"mcd_dtw_db": mcd, "mcd_dtw_sl_db": mcd * length_ratio}
    if with_f0 and wav is not None and len(wav) > config.n_fft:
        pitch = f0_metrics(
            reference.wav,
            wav,
            config.sample_rate,
            frame_length=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            path=path,
            reference_pitch=reference.pitch,
        )
        scores["log_f0_rmse_cents"] = pitch["log_f0_rmse_cents"]
        scores["voicing_decision_error"] = pitch["voicing_decision_error"]
    return scores


@torch.no_grad()
def evaluate_model(
    model: TacotronTTS,
    speaker: int,
    sentences: Sequence[TestSentence],
    vocoder,
    out_dir: str | Path | None,
    *,
    frames_per_char: float = 1.0,
    seed: int = 0,
    max_length_ratio: float = 3.0,
    with_f0: bool = True,
    keep_alignments: Sequence[str] = (),
    batch_size: int = 16,
    references: Mapping[str, Reference] | None = None,
    mapper=map,
    timings: dict | None = None,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Synthesize every sentence for ``speaker``, write ``out_dir/<id>.wav``, score it.

    Synthesis is free-running and batched (``batch_size`` sentences of similar length per
    batch, the torch RNG seeded per batch, since Tacotron 2 keeps pre-net dropout on at
    inference). Each sentence's decoder may run for ``max_length_ratio`` times its expected
    length; a sentence of the batch that has not stopped by then is cut there and counts as
    not ``stopped``. MCD-DTW(-SL) compares the reference recording with the *predicted mel*
    (so the vocoder's error is not counted); log-F0 RMSE and voicing error compare it with
    the vocoded WAV, paired by the MCD's DTW path. Sentences without a reference get the
    attention metrics and a stop-length error against ``characters x frames_per_char``.

    With ``vocoder`` None nothing is vocoded or written (``out_dir`` may be None) and the F0
    metrics are skipped: the free-running dev criterion (:class:`FreeRunningDev`) scores the
    predicted mels alone.

    Args:
        references: :func:`load_references` of ``sentences`` (loaded here when None).
        mapper: ``map`` or an executor's ``map``: the per-sentence scoring (DTW, pyin) runs
            through it.
        timings: a dict that receives ``synthesis_s`` (decoding, vocoding, WAVs) and
            ``scoring_s`` (the reference metrics).

    Returns one row per sentence in ``sentences`` order (``id``, ``bin``, ``similarity``,
    metrics, ``frames``, ``stopped``) and the alignments ``(S, L)`` of the ids in
    ``keep_alignments``.
    """
    with_f0 = with_f0 and vocoder is not None  # F0 is tracked on the vocoded WAV
    if vocoder is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    step_frames = config.frames_per_step
    if references is None:
        references = load_references(sentences, config, with_f0=with_f0)
    model.eval()
    characters = [len(model.frontend.encode(sentence.text)) for sentence in sentences]
    expected = [
        references[sentence.id].frames
        if sentence.in_domain
        else max(1, round(count * frames_per_char))
        for sentence, count in zip(sentences, characters, strict=True)
    ]
    # the decoder-step guard of each sentence
    guards = [math.ceil(max_length_ratio * frames / step_frames) + 1 for frames in expected]
    # batches of similar text length waste fewer decoder steps on padding
    order = sorted(range(len(sentences)), key=lambda index: (characters[index], index))
    started = time.perf_counter()
    rows: dict[int, dict] = {}
    jobs, job_rows, alignments = [], [], {}
    for batch_number, start in enumerate(range(0, len(order), batch_size)):
        members = order[start : start + batch_size]
        torch.manual_seed(seed + batch_number)
        output = model.synthesize(
            [sentences[index].text for index in members],
            speaker=speaker,
            max_decoder_steps=max(guards[index] for index in members),
        )
        steps = [
            max(1, min(int(output.mel_lengths[slot]) // step_frames, guards[index]))
            for slot, index in enumerate(members)
        ]
        frames = torch.tensor([count * step_frames for count in steps])
        # the vocoder runs on the CPU (the model may be on a GPU); (B, n_mels, F) cropped
        # to the longest kept synthesis
        mels = output.mel[:, :, : int(frames.max())].cpu()
        if vocoder is not None:
            wavs, wav_lengths = vocoder(mels, frames)
        for slot, index in enumerate(members):
            sentence = sentences[index]
            kept_frames = int(frames[slot])
            mel = mels[slot, :, :kept_frames]  # (n_mels, F)
            wav = None
            if vocoder is not None:
                wav = wavs[slot, : int(wav_lengths[slot])].cpu()
                audio.save(out_dir / f"{sentence.id}.wav", wav, vocoder.sample_rate)
            alignment = output.alignments[slot, : steps[slot], : characters[index]].cpu()
            # stopped: the stop token fired within this sentence's own guard
            fired = int(output.mel_lengths[slot]) // step_frames <= guards[index]
            rows[index] = {
                "id": sentence.id,
                "text": sentence.text,
                "bin": sentence.bin,
                "similarity": sentence.similarity,
                "frames": kept_frames,
                "expected_frames": expected[index],
                "stopped": bool(output.stopped[slot]) and fired,
                "attention_focus_rate": attention_focus_rate(alignment),
                "attention_diagonality": attention_diagonality(alignment),
                "stop_length_error": float(stop_length_error([kept_frames], [expected[index]])[0]),
            }
            if sentence.in_domain:
                mel_array = mel.double().numpy()
                wav_array = None if wav is None else wav.numpy()
                job = (references[sentence.id], mel_array, wav_array, expected[index])
                jobs.append((*job, kept_frames, config, with_f0))
                job_rows.append(index)
            if sentence.id in keep_alignments:
                alignments[sentence.id] = alignment.numpy()
    synthesized = time.perf_counter()
    for index, scores in zip(job_rows, mapper(_score_against_reference, jobs), strict=True):
        rows[index].update(scores)
    if timings is not None:
        timings["synthesis_s"] = synthesized - started
        timings["scoring_s"] = time.perf_counter() - synthesized
    return [rows[index] for index in range(len(sentences))], alignments
