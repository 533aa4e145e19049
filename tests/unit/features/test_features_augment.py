"""Waveform augmentation: speed changes lengths as torchaudio does, gain and SNR land in range."""

import pytest
import torch
import torchaudio.functional as AF

from speechssl.features import WaveformAugment, lengths_to_mask


def test_speed_perturbation_matches_torchaudio_per_utterance(speech_16k, padded):
    wavs = speech_16k[:3]
    batch, lengths = padded(wavs)
    augment = WaveformAugment(speed_factors=(0.9, 1.1), gain_db=None, snr_db=None, seed=0)
    out, out_lengths = augment(batch, lengths)
    assert out.size(1) == int(out_lengths.max())
    seen = set()
    for row, wav in enumerate(wavs):
        candidates = {
            factor: AF.speed(wav[None], 16000, factor, torch.tensor([wav.numel()]))
            for factor in (0.9, 1.1)
        }
        factor = next(f for f, (_, n) in candidates.items() if int(n) == int(out_lengths[row]))
        seen.add(factor)
        reference = candidates[factor][0][0, : int(out_lengths[row])]
        torch.testing.assert_close(out[row, : reference.numel()], reference, atol=1e-5, rtol=0)
    assert out[~lengths_to_mask(out_lengths, out.size(1))].eq(0).all()


def test_gain_and_noise_stay_in_their_ranges_over_valid_samples_only(speech_16k, padded):
    batch, lengths = padded(speech_16k)
    clean = batch * lengths_to_mask(lengths, batch.size(1))
    gain = WaveformAugment(speed_factors=(), gain_db=(-6.0, 6.0), snr_db=None, seed=1)
    out, _ = gain(batch, lengths)
    ratio_db = 20 * torch.log10(out.abs().amax(1) / clean.abs().amax(1))
    assert ((ratio_db > -6.001) & (ratio_db < 6.001)).all()

    noisy_module = WaveformAugment(
        speed_factors=(), gain_db=None, snr_db=(5.0, 10.0), noise_probability=1.0, seed=2
    )
    noisy, out_lengths = noisy_module(batch, lengths)
    assert torch.equal(out_lengths, lengths)
    valid = lengths_to_mask(lengths, batch.size(1))
    noise = (noisy - clean) * valid
    snr = 10 * torch.log10(clean.square().sum(1) / noise.square().sum(1))
    assert ((snr > 4.99) & (snr < 10.01)).all()
    assert noisy[~valid].eq(0).all()


def test_recorded_noise_is_tiled_and_the_snr_holds(speech_16k, padded):
    batch, lengths = padded(speech_16k[:2], pad_value=0.0)
    noise = torch.randn(2, 1000)
    augment = WaveformAugment(
        speed_factors=(), gain_db=None, snr_db=(3.0, 3.0), noise_probability=1.0
    )
    noisy, _ = augment(batch, lengths, noise=noise)
    added = noisy - batch
    snr = 10 * torch.log10(batch.square().sum(1) / added.square().sum(1))
    torch.testing.assert_close(snr, torch.full((2,), 3.0), atol=1e-3, rtol=0)


def test_seeded_and_identity_in_eval(speech_16k, padded):
    batch, lengths = padded(speech_16k[:3])
    first = WaveformAugment(seed=5)(batch, lengths)
    second = WaveformAugment(seed=5)(batch, lengths)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    out, out_lengths = WaveformAugment(seed=5).eval()(batch, lengths)
    assert out is batch and torch.equal(out_lengths, lengths)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="positive length"):
        WaveformAugment()(torch.zeros(2, 100), torch.tensor([100, 0]))
    with pytest.raises(ValueError, match="speed factors"):
        WaveformAugment(speed_factors=(0.0,))
    with pytest.raises(ValueError, match="noise must be"):
        WaveformAugment(snr_db=(5, 5), noise_probability=1.0)(
            torch.zeros(2, 100), torch.tensor([100, 50]), noise=torch.zeros(3, 10)
        )
