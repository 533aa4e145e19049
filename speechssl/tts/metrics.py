"""Objective TTS metrics that need no human raters.

What exactly is computed (for the README):

* **MCD-DTW** (dB): mel-cepstra are the cosine transform of the 80-bin natural-log magnitude
  mel spectrogram (``LogMel``, 22,050 Hz / 1024 / 256 by default),
  ``c_k = (1 / N) * sum_n log m_n * cos(pi * k * (n + 1/2) / N)`` (scipy's unnormalised DCT-II
  divided by ``2 N``: the real cepstrum's scale, independent of the number of mel bins ``N``),
  coefficients ``c_1..c_K`` (``K = 24``; ``c_0``, the energy, excluded). Reference and synthesis are aligned by
  ``librosa.sequence.dtw`` (Euclidean cost on those cepstra) and
  ``MCD = mean over the path of (10 / ln 10) * sqrt(2 * sum_k (c_k - c'_k)^2)``.
  The filterbank cepstrum is not SPTK's all-pass-warped ``mcep``, so absolute values are not
  comparable with papers that use SPTK; differences between systems are.
* **MCD-DTW-SL** (dB): MCD-DTW times ``max(N, M) / min(N, M)`` for ``N`` reference and ``M``
  synthesized frames (Chen et al. 2022, "speech-length" weighting). DTW alone lets a
  synthesis that never stops match each reference frame to its closest of many frames and
  score *better*; the length factor charges for that.
* **log-F0 RMSE** (cents) and **voicing decision error** (VDE, fraction): F0 and voicing by
  ``librosa.pyin`` on the same frame grid as the mels (``frame_length = n_fft``,
  ``hop_length``, centred), frames paired by the MCD's DTW path (or by linear time
  stretching, ``alignment="linear"``). RMSE of ``1200 * log2(f0_syn / f0_ref)`` over pairs
  voiced in both; VDE = share of pairs whose voiced/unvoiced decisions differ
  (Nakatani et al. 2008).
* **attention focus rate**: mean over decoder steps of the largest attention weight
  (Ren et al. 2019, FastSpeech); 1 = every step attends to one character.
* **attention diagonality**: mean over decoder steps of ``sum_n A[t, n] * exp(-(n/N - t/T)^2 /
  (2 g^2))`` with ``g = 0.2``, i.e. 1 minus the guided-attention penalty
  (Tachibana et al. 2017): 1 when the attention follows the diagonal, near 0 far off it.
* **stop-length error**: ``|predicted frames - reference frames| / reference frames`` per
  utterance, where the prediction is where the stop token fired (or the step guard).

Example:
    >>> import torch
    >>> wav = torch.sin(torch.arange(11025) * 0.05)
    >>> mel_cepstral_distortion_dtw(wav, wav, sample_rate=22050)
    0.0
    >>> attention_focus_rate(torch.eye(4))
    1.0
    >>> stop_length_error([110, 90], [100, 100]).tolist()
    [0.1, 0.1]
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import scipy.fft
import torch

from speechssl.features import LogMel

__all__ = [
    "attention_diagonality",
    "attention_focus_rate",
    "dtw_path",
    "f0_metrics",
    "mel_cepstra",
    "mel_cepstral_distortion_dtw",
    "pitch_track",
    "stop_length_error",
    "utterance_metrics",
]

MCD_CONSTANT = 10.0 / math.log(10.0) * math.sqrt(2.0)


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _log_mel(
    signal, sample_rate: int | None, n_fft: int, hop_length: int, n_mels: int
) -> np.ndarray:
    """A ``(T,)`` waveform or an ``(n_mels, F)`` log-mel -> ``(n_mels, F)`` log-mel."""
    array = _numpy(signal)
    if array.ndim == 2:
        if array.shape[0] != n_mels:
            raise ValueError(f"a log-mel input must be (n_mels={n_mels}, F), got {array.shape}")
        return array
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"expected a (T,) waveform or an (n_mels, F) log-mel, got {array.shape}")
    if sample_rate is None:
        raise ValueError("sample_rate is required for waveform inputs")
    logmel = LogMel(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    wav = torch.as_tensor(array, dtype=torch.float32).unsqueeze(0)  # (T,) -> (1, T)
    mel, _ = logmel(wav, torch.tensor([wav.size(1)]))
    return mel[0].double().numpy().T  # (F, n_mels) -> (n_mels, F)


def mel_cepstra(log_mel: np.ndarray, num_coefficients: int = 24) -> np.ndarray:
    """``(n_mels, F)`` log-mel -> ``(num_coefficients, F)`` cepstra ``c_1..c_K`` (no ``c_0``)."""
    if not 1 <= num_coefficients < log_mel.shape[0]:
        raise ValueError(f"num_coefficients must lie in [1, {log_mel.shape[0] - 1}]")
    # unnormalised DCT-II is 2 * sum_n x_n cos(...); / (2 N) gives the real cepstrum's scale
    cepstra = scipy.fft.dct(log_mel, type=2, norm=None, axis=0) / (2 * log_mel.shape[0])
    return cepstra[1 : num_coefficients + 1]


def dtw_path(reference: np.ndarray, synthesized: np.ndarray) -> np.ndarray:
    """``(K, N)``, ``(K, M)`` features -> ``(P, 2)`` index pairs, start to end (librosa DTW)."""
    _, path = librosa.sequence.dtw(X=reference, Y=synthesized, metric="euclidean")
    return path[::-1]  # librosa returns the path end-first


def mel_cepstral_distortion_dtw(
    reference,
    synthesized,
    sample_rate: int | None = None,
    num_coefficients: int = 24,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
    return_path: bool = False,
):
    """MCD (dB) between a reference and a synthesis after DTW; see the module docstring.

    Args:
        reference, synthesized: ``(T,)`` waveforms (``sample_rate`` needed) or ``(n_mels, F)``
            natural-log mels (e.g. :meth:`TacotronTTS.synthesize` output), in any mix.
        return_path: also return the ``(P, 2)`` DTW frame pairs (reused by :func:`f0_metrics`).
    """
    reference_cepstra = mel_cepstra(
        _log_mel(reference, sample_rate, n_fft, hop_length, n_mels), num_coefficients
    )
    synthesized_cepstra = mel_cepstra(
        _log_mel(synthesized, sample_rate, n_fft, hop_length, n_mels), num_coefficients
    )
    path = dtw_path(reference_cepstra, synthesized_cepstra)
    differences = reference_cepstra[:, path[:, 0]] - synthesized_cepstra[:, path[:, 1]]
    mcd = float(MCD_CONSTANT * np.sqrt((differences**2).sum(axis=0)).mean())
    return (mcd, path) if return_path else mcd


def pitch_track(
    wav,
    sample_rate: int,
    fmin: float = 65.0,
    fmax: float = 400.0,
    frame_length: int = 1024,
    hop_length: int = 256,
    resolution: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """pyin F0 ``(F,)`` (Hz, NaN where unvoiced) and voiced flags ``(F,)`` of a ``(T,)`` wave,
    on the mel frame grid (centred frames). :func:`f0_metrics` takes a reference's track
    through ``reference_pitch``, so a reference scored against many syntheses is tracked once.
    """
    options = (sample_rate, fmin, fmax, frame_length, hop_length, resolution)
    return _pyin(_numpy(wav), *options)


def _pyin(wav: np.ndarray, sample_rate, fmin, fmax, frame_length, hop_length, resolution):
    f0, voiced, _ = librosa.pyin(
        wav.astype(np.float32),
        fmin=fmin,
        fmax=fmax,
        sr=sample_rate,
        frame_length=frame_length,
        hop_length=hop_length,
        resolution=resolution,
        center=True,
    )
    return f0, voiced


def f0_metrics(
    reference_wav,
    synthesized_wav,
    sample_rate: int,
    fmin: float = 65.0,
    fmax: float = 400.0,
    frame_length: int = 1024,
    hop_length: int = 256,
    resolution: float = 0.1,
    alignment: str = "dtw",
    n_mels: int = 80,
    path: np.ndarray | None = None,
    reference_pitch: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """log-F0 RMSE (cents) and voicing decision error between two waveforms.

    Args:
        reference_wav, synthesized_wav: ``(T,)`` waveforms at ``sample_rate``.
        fmin, fmax: pyin's F0 search range in Hz (narrower is faster).
        frame_length, hop_length: pyin frames; keep them equal to the mel analysis so the DTW
            path of the mel-cepstra pairs F0 frames.
        resolution: pyin pitch-bin width in semitones (0.1 is librosa's default; coarser is faster).
        alignment: ``"dtw"`` (pairs from the MCD's DTW path) or ``"linear"`` (stretch the
            synthesis's frame axis onto the reference's).
        path: a precomputed ``(P, 2)`` DTW path on the same frame grid.
        reference_pitch: the reference's :func:`pitch_track` with the same options
            (computed here when None).

    Returns:
        ``{"log_f0_rmse_cents", "voicing_decision_error", "voiced_pairs"}``; the RMSE is NaN
        when no pair is voiced in both.
    """
    reference = _numpy(reference_wav)
    synthesized = _numpy(synthesized_wav)
    if reference.ndim != 1 or synthesized.ndim != 1 or not reference.size or not synthesized.size:
        raise ValueError("f0_metrics expects two non-empty (T,) waveforms")
    if alignment not in ("dtw", "linear"):
        raise ValueError(f"alignment must be 'dtw' or 'linear', got {alignment!r}")
    options = (sample_rate, fmin, fmax, frame_length, hop_length, resolution)
    if reference_pitch is None:
        reference_pitch = _pyin(reference, *options)
    reference_f0, reference_voiced = reference_pitch
    synthesized_f0, synthesized_voiced = _pyin(synthesized, *options)
    if alignment == "linear":
        reference_index = np.arange(len(reference_f0))
        scale = (len(synthesized_f0) - 1) / max(len(reference_f0) - 1, 1)
        path = np.stack([reference_index, np.round(reference_index * scale).astype(int)], axis=1)
    elif path is None:
        _, path = mel_cepstral_distortion_dtw(
            reference,
            synthesized,
            sample_rate,
            n_fft=frame_length,
            hop_length=hop_length,
            n_mels=n_mels,
            return_path=True,
        )
    path = np.asarray(path)
    path = path[(path[:, 0] < len(reference_f0)) & (path[:, 1] < len(synthesized_f0))]
    voiced_reference = reference_voiced[path[:, 0]]
    voiced_synthesized = synthesized_voiced[path[:, 1]]
    both = voiced_reference & voiced_synthesized
    if both.any():
        cents = 1200.0 * np.log2(synthesized_f0[path[both, 1]] / reference_f0[path[both, 0]])
        rmse = float(np.sqrt(np.mean(cents**2)))
    else:
        rmse = float("nan")
    return {
        "log_f0_rmse_cents": rmse,
        "voicing_decision_error": float(np.mean(voiced_reference != voiced_synthesized)),
        "voiced_pairs": int(both.sum()),
    }


def _alignment(alignment, num_steps: int | None, num_tokens: int | None) -> np.ndarray:
    array = _numpy(alignment)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            f"alignment must be a non-empty (decoder steps, characters) matrix, got {array.shape}"
        )
    return array[: num_steps or array.shape[0], : num_tokens or array.shape[1]]


def attention_focus_rate(
    alignment, num_steps: int | None = None, num_tokens: int | None = None
) -> float:
    """Mean over decoder steps of the largest attention weight, in ``(0, 1]``.

    Args:
        alignment: ``(S, L)`` attention weights (one synthesized utterance).
        num_steps, num_tokens: valid steps and characters (crop the padding of a batch).
    """
    return float(_alignment(alignment, num_steps, num_tokens).max(axis=1).mean())


def attention_diagonality(
    alignment, num_steps: int | None = None, num_tokens: int | None = None, sigma: float = 0.2
) -> float:
    """Mean over steps of the attention mass under a diagonal Gaussian band, in ``[0, 1]``."""
    array = _alignment(alignment, num_steps, num_tokens)
    steps, tokens = array.shape
    # (S, 1) and (1, L) relative positions, as in the guided-attention loss
    step_position = np.arange(steps)[:, None] / steps
    token_position = np.arange(tokens)[None, :] / tokens
    band = np.exp(-((token_position - step_position) ** 2) / (2.0 * sigma**2))
    return float((array * band).sum(axis=1).mean())


def stop_length_error(predicted_frames, reference_frames) -> np.ndarray:
    """Per utterance ``|predicted - reference| / reference`` (``(N,)`` float array)."""
    predicted = _numpy(predicted_frames).reshape(-1)
    reference = _numpy(reference_frames).reshape(-1)
    if predicted.shape != reference.shape or (reference <= 0).any():
        raise ValueError("predicted and reference frame counts must match in number and be > 0")
    return np.abs(predicted - reference) / reference


def utterance_metrics(
    reference_wav,
    synthesized_wav,
    sample_rate: int,
    alignment=None,
    predicted_frames: int | None = None,
    num_steps: int | None = None,
    num_tokens: int | None = None,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
    fmin: float = 65.0,
    fmax: float = 400.0,
    with_f0: bool = True,
) -> dict[str, float]:
    """Every metric above for one test sentence; one DTW path serves MCD and F0.

    ``alignment`` is the ``(S, L)`` attention of the synthesis, cropped to ``num_steps`` valid
    decoder steps and ``num_tokens`` characters; ``predicted_frames`` is its frame count; the
    reference frame count is ``1 + len(reference_wav) // hop_length``.
    """
    mcd, path = mel_cepstral_distortion_dtw(
        reference_wav,
        synthesized_wav,
        sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        return_path=True,
    )
    reference_frames = int(path[:, 0].max()) + 1
    synthesized_frames = int(path[:, 1].max()) + 1
    length_ratio = max(reference_frames, synthesized_frames) / min(
        reference_frames, synthesized_frames
    )
    results = {"mcd_dtw_db": mcd, "mcd_dtw_sl_db": mcd * length_ratio}
    if with_f0:
        results.update(
            f0_metrics(
                reference_wav,
                synthesized_wav,
                sample_rate,
                fmin=fmin,
                fmax=fmax,
                frame_length=n_fft,
                hop_length=hop_length,
                path=path,
            )
        )
    if alignment is not None:
        results["attention_focus_rate"] = attention_focus_rate(alignment, num_steps, num_tokens)
        results["attention_diagonality"] = attention_diagonality(alignment, num_steps, num_tokens)
    if predicted_frames is not None:
        reference_frames = 1 + len(_numpy(reference_wav)) // hop_length
        results["stop_length_error"] = float(
            stop_length_error([predicted_frames], [reference_frames])[0]
        )
    return results
