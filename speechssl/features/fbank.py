"""Batched, length-aware log-mel filterbanks (Kaldi-compatible by default).

``torchaudio.compliance.kaldi.fbank`` takes one utterance at a time; calling it in a Python
loop over a batch wastes the device. :class:`Fbank` computes the same numbers for a whole
padded batch at once:

1. ``unfold`` the flattened batch into a strided view of windows (no copy), then gather only
   the frames inside each utterance's length with one ``index_select``, so padding never costs
   an FFT; on a CPU this runs in cache-sized chunks of frames;
2. Kaldi's per-frame DC removal, pre-emphasis and Povey window, done in the same arithmetic
   order as torchaudio so that results agree to float rounding even on near-silent frames;
3. one batched ``rfft``, power spectrum, one matmul with ``kaldi.get_mel_banks``, log;
4. ``index_copy_`` the rows into a zero-padded ``(B, F_max, n_mels)`` tensor.

Example:
    >>> import torch
    >>> fbank = Fbank(n_mels=80)
    >>> feats, feat_lengths = fbank(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> feats.shape, feat_lengths.tolist()
    (torch.Size([2, 98, 80]), [98, 48])
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torchaudio.compliance import kaldi

from speechssl.features.framing import check_batch, frame_lengths, lengths_to_mask

__all__ = ["Fbank", "kaldi_power_spectrum"]

# Kaldi floors energies at float32 epsilon before taking the log.
KALDI_EPSILON = torch.finfo(torch.float32).eps


def _next_power_of_two(value: int) -> int:
    return 1 << (value - 1).bit_length()


def kaldi_power_spectrum(
    frames: torch.Tensor,
    window: torch.Tensor,
    n_fft: int,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
) -> torch.Tensor:
    """Kaldi's per-frame processing and power spectrum for packed frames.

    Args:
        frames: ``(N, win)`` raw frames (any strides).
        window: ``(win,)`` analysis window.
        n_fft: FFT size (``>= win``; Kaldi rounds ``win`` up to a power of two).

    Returns:
        ``(N, n_fft // 2 + 1)`` power spectrum.
    """
    # Written by hand because kaldi.fbank has no batched entry point; every step mirrors its
    # arithmetic (subtract the mean, then x[j] - a * x[j-1] with x[-1] := x[0], then window) so the
    # cancellation-prone low-energy bins round exactly as torchaudio's do.
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    num_frames, win_length = frames.shape
    if preemphasis != 0.0:
        # x[j] - a * x[j - 1], with x[-1] := x[0]: the scaled previous samples are written
        # shifted into one buffer (torchaudio replicate-pads and slices, one more copy), and
        # the product is rounded before the subtraction as in torchaudio (no fused alpha).
        emphasized = torch.empty_like(frames)
        torch.mul(frames[:, :-1], preemphasis, out=emphasized[:, 1:])
        torch.mul(frames[:, :1], preemphasis, out=emphasized[:, :1])
        torch.sub(frames, emphasized, out=emphasized)
        frames = emphasized
    # Write the windowed frames straight into the zero-padded FFT buffer: saves one copy.
    padded = frames.new_zeros(num_frames, n_fft)
    torch.mul(frames, window, out=padded[:, :win_length])
    spectrum = torch.fft.rfft(padded)  # (N, n_fft // 2 + 1) complex
    # |X|^2 as re^2 + im^2: abs() would take a square root, and summing view_as_real's
    # trailing size-2 dim is a slow reduction
    return torch.addcmul(spectrum.real.square(), spectrum.imag, spectrum.imag)


class Fbank(nn.Module):
    """Log-mel filterbank for a padded batch: ``(B, T), (B,) -> (B, F, n_mels), (B,)``.

    With ``kaldi_compatible=True`` (default) each row equals
    ``torchaudio.compliance.kaldi.fbank(wav[None, :length], num_mel_bins=n_mels, dither=0.0)``
    (25 ms / 10 ms frames, ``snip_edges``, DC removal, pre-emphasis 0.97, Povey window, 512-point
    FFT, power spectrum, mel banks from 20 Hz to Nyquist, log floored at float32 epsilon).
    The waveform is used as given (torchaudio does not rescale it to 16-bit integers).

    With ``kaldi_compatible=False`` it is ``torchaudio.transforms.MelSpectrogram`` (Hann window,
    ``n_fft = win_length``, HTK mel, ``center=False`` so frames are Kaldi's) then ``log(x + 1e-6)``.

    Frames beyond each utterance's length are zero.

    Args:
        n_mels: number of mel bins (fairseq ``num_mel_bins``).
        sample_rate: input sample rate in Hz.
        frame_length_ms, frame_shift_ms: window and hop in milliseconds.
        low_freq, high_freq: mel range in Hz; ``high_freq <= 0`` is an offset from Nyquist.
        kaldi_compatible: see above.
        cpu_chunk_frames: frames processed together on a CPU; ``None`` means 512 per torch
            thread, a working set that stays in each core's cache.

    Example:
        >>> feats, lengths = Fbank(n_mels=40)(torch.zeros(1, 800), torch.tensor([800]))
        >>> feats.shape, lengths.tolist()
        (torch.Size([1, 3, 40]), [3])
    """

    def __init__(
        self,
        n_mels: int = 80,
        sample_rate: int = 16000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        preemphasis: float = 0.97,
        kaldi_compatible: bool = True,
        cpu_chunk_frames: int | None = None,
    ) -> None:
        super().__init__()
        if n_mels < 4:
            raise ValueError(f"n_mels must be at least 4, got {n_mels}")
        self.n_mels = n_mels
        self.sample_rate = sample_rate
        self.kaldi_compatible = kaldi_compatible
        self.preemphasis = preemphasis
        self.cpu_chunk_frames = cpu_chunk_frames
        self.win_length = int(sample_rate * frame_length_ms / 1000.0)
        self.hop_length = int(sample_rate * frame_shift_ms / 1000.0)
        self.n_fft = _next_power_of_two(self.win_length)
        nyquist = sample_rate / 2.0
        top = high_freq if high_freq > 0 else nyquist + high_freq
        if not 0.0 <= low_freq < top <= nyquist:
            raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq}, {top}")
        if kaldi_compatible:
            banks, _ = kaldi.get_mel_banks(
                n_mels, self.n_fft, float(sample_rate), low_freq, high_freq, 100.0, -500.0, 1.0
            )
            # Kaldi's banks have no Nyquist column: add it as zeros.
            # (n_mels, n_fft // 2) -> (n_fft // 2 + 1, n_mels) so the matmul is frames @ banks
            banks = nn.functional.pad(banks, (0, 1)).T.contiguous()
            self.register_buffer("mel_banks", banks.float(), persistent=False)
            window = torch.hann_window(self.win_length, periodic=False).pow(0.85)  # Povey window
            self.register_buffer("window", window, persistent=False)
        else:
            # n_fft = win_length: a larger n_fft would make torch.stft read n_fft samples per
            # frame, past the Kaldi frame and into the padding of each row's last frames
            self.mel_spectrogram = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=self.win_length,
                win_length=self.win_length,
                hop_length=self.hop_length,
                f_min=low_freq,
                f_max=top,
                n_mels=n_mels,
                center=False,
                power=2.0,
            )

    def _kaldi_log_mel(
        self, wav: torch.Tensor, valid: torch.Tensor, feats: torch.Tensor
    ) -> torch.Tensor:
        """Fill ``feats (B, F, n_mels)`` at the ``valid (B, F)`` frames of ``wav (B, T)``."""
        wav = wav.contiguous()
        batch_size, num_samples = wav.shape
        num_frames = feats.size(1)
        # (B * T,) -> (B * T - win + 1, win): a window starting at every sample, no copy;
        # frame f of row b is row b * T + f * hop, so gathering only the valid frames is one
        # index_select (a boolean mask on the (B, F, win) view measured 15x slower).
        windows = wav.reshape(-1).unfold(0, self.win_length, 1)
        row, frame = valid.nonzero(as_tuple=True)
        starts = row * num_samples + frame * self.hop_length
        destinations = row * num_frames + frame
        # (B, F, n_mels) -> (B * F, n_mels), a view, so index_copy_ writes into feats
        flat_feats = feats.view(batch_size * num_frames, self.n_mels)
        # On a CPU, ~512 frames per thread at a time keep the FFT buffers in cache (a whole
        # batch at once measured 2x slower); a GPU wants one large launch instead.
        chunk = self.cpu_chunk_frames or 512 * torch.get_num_threads()
        chunk = starts.numel() if wav.is_cuda else chunk
        for begin in range(0, starts.numel(), chunk):
            frames = windows.index_select(0, starts[begin : begin + chunk])  # (n, win)
            power = kaldi_power_spectrum(frames, self.window, self.n_fft, self.preemphasis)
            # (n, n_fft // 2 + 1) @ (n_fft // 2 + 1, n_mels) -> (n, n_mels)
            mel = torch.matmul(power, self.mel_banks)
            log_mel = mel.clamp_min_(KALDI_EPSILON).log_()
            flat_feats.index_copy_(0, destinations[begin : begin + chunk], log_mel)
        return feats

    def _kaldi_log_mel_every_frame(self, wav: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """:meth:`_kaldi_log_mel` without data-dependent sizes, for captured graphs: every
        frame of the padded batch is computed, the padded ones zeroed after. Same
        arithmetic, out-of-place (equal to the eager path within float rounding)."""
        # (B, T) -> (B, F, win): one window every hop
        frames = wav.unfold(1, self.win_length, self.hop_length)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        if self.preemphasis != 0.0:
            # x[j] - a * x[j - 1] with x[-1] := x[0]
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - previous * self.preemphasis
        frames = frames * self.window
        # zero-pad the window to the FFT size: (B, F, win) -> (B, F, n_fft)
        padded = torch.nn.functional.pad(frames, (0, self.n_fft - self.win_length))
        spectrum = torch.fft.rfft(padded)  # (B, F, n_fft // 2 + 1) complex
        power = spectrum.real.square() + spectrum.imag.square()
        log_mel = torch.matmul(power, self.mel_banks).clamp_min(KALDI_EPSILON).log()
        return torch.where(valid.unsqueeze(-1), log_mel, torch.zeros_like(log_mel))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per utterance for ``lengths`` samples (Kaldi ``snip_edges``)."""
        return frame_lengths(lengths, self.win_length, self.hop_length, snip_edges=True)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav (B, T)`` float, ``lengths (B,)`` samples -> ``(B, F, n_mels)``, ``(B,)`` frames."""
        lengths = check_batch(wav, lengths)
        feat_lengths = self.output_lengths(lengths)
        capturing = torch.compiler.is_compiling()
        if capturing:
            # a captured graph (torch.export for ONNX) has no data-dependent sizes: frames of
            # the padded length, which is the longest item's in any collated batch
            num_frames = (wav.size(1) - self.win_length) // self.hop_length + 1
        else:
            num_frames = int(feat_lengths.max()) if feat_lengths.numel() else 0
        # features are always float32, whatever the input or an enclosing autocast region:
        # half-precision FFTs and mel matmuls would break the 1e-3 agreement with Kaldi
        wav = wav.float()
        feats = wav.new_zeros(wav.size(0), num_frames, self.n_mels)
        if num_frames == 0:
            return feats, feat_lengths
        valid = lengths_to_mask(feat_lengths, num_frames)  # (B, F)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            if self.kaldi_compatible and capturing:
                feats = self._kaldi_log_mel_every_frame(wav, valid)
            elif self.kaldi_compatible:
                feats = self._kaldi_log_mel(wav, valid, feats)
            else:
                # only the samples the longest row's frames use
                wav = wav[:, : (num_frames - 1) * self.hop_length + self.win_length]
                mel = self.mel_spectrogram(wav)  # (B, n_mels, F)
                # (B, n_mels, F) -> (B, F, n_mels)
                mel = mel.transpose(1, 2)[:, :num_frames]
                feats = torch.where(valid.unsqueeze(-1), (mel + 1e-6).log(), feats)
        return feats, feat_lengths
