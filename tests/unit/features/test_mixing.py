"""Utterance mixing: overlap and energy ratio in range, padding and targets untouched."""

import pytest
import torch

from speechssl.features.mixing import UtteranceMixing


def _check_row(wav, mixed, lengths, info, row, max_overlap=0.5, ratio_db=(-5.0, 5.0)):
    """Recompute from the waveforms what mixing did to one mixed row."""
    length = int(lengths[row])
    partner = int(info.partner[row])
    overlap, start, source = (
        int(info.overlap[row]),
        int(info.primary_start[row]),
        int(info.secondary_start[row]),
    )
    assert partner != row
    assert 0 < overlap <= max_overlap * length and overlap <= int(lengths[partner])
    assert 0 <= start and start + overlap <= length  # inside the primary's valid samples
    assert 0 <= source and source + overlap <= int(lengths[partner])  # a crop of valid samples
    added = (mixed[row] - wav[row]).double()
    assert added[:start].abs().max() == 0 and added[start + overlap :].abs().max() == 0
    segment = wav[partner, source : source + overlap].double()
    gain = (added[start : start + overlap] @ segment) / (segment @ segment)
    torch.testing.assert_close(added[start : start + overlap], gain * segment, atol=1e-5, rtol=1e-4)
    primary_power = wav[row, start : start + overlap].double().square().mean()
    realised = 10 * torch.log10(primary_power / added[start : start + overlap].square().mean())
    assert ratio_db[0] - 1e-3 <= float(realised) <= ratio_db[1] + 1e-3
    assert float(info.energy_ratio_db[row]) == pytest.approx(float(realised), abs=1e-3)


def test_overlap_and_energy_ratio_stay_in_range_on_speech(speech_16k, padded):
    wav, lengths = padded(speech_16k)  # loud noise in the padding
    mixing = UtteranceMixing(mixing_prob=1.0).train()
    checked = 0
    for seed in range(3):
        mixed, info = mixing(wav, lengths, generator=torch.Generator().manual_seed(seed))
        assert torch.isfinite(mixed).all()
        padding = torch.arange(wav.shape[1])[None] >= lengths[:, None]
        assert torch.equal(mixed[padding], wav[padding])  # never writes outside a valid length
        for row in torch.nonzero(info.mixed).flatten().tolist():
            _check_row(wav, mixed, lengths, info, row)
            checked += 1
        unmixed = ~info.mixed
        assert torch.equal(mixed[unmixed], wav[unmixed])
    assert checked >= 12  # only a zero-length overlap draw leaves a row alone


def test_mixing_probability_and_ratio_range_are_respected():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(4000, 8000, (400,), generator=generator)
    wav = torch.randn(400, 8000, generator=generator) * torch.rand(400, 1, generator=generator)
    wav = wav * (torch.arange(8000)[None] < lengths[:, None])
    mixing = UtteranceMixing(mixing_prob=0.3, max_overlap=0.2, energy_ratio_db=(0.0, 2.0)).train()
    mixed, info = mixing(wav, lengths, generator=generator)
    assert 0.22 < float(info.mixed.float().mean()) < 0.38
    ratios = info.energy_ratio_db[info.mixed]
    assert float(ratios.min()) >= -1e-3 and float(ratios.max()) <= 2.0 + 1e-3
    assert float((info.overlap.float() / lengths).max()) <= 0.2
    # overlaps spread over the whole allowed range, not only its ends
    fractions = (info.overlap.float() / lengths)[info.mixed]
    assert float(fractions.min()) < 0.05 and float(fractions.max()) > 0.15
    for row in torch.nonzero(info.mixed).flatten()[:10].tolist():
        _check_row(wav, mixed, lengths, info, row, max_overlap=0.2, ratio_db=(0.0, 2.0))


def test_identity_in_eval_mode_for_single_utterances_and_zero_probability():
    wav, lengths = torch.randn(3, 1000), torch.tensor([1000, 800, 600])
    mixing = UtteranceMixing(mixing_prob=1.0)
    for output, info in (
        mixing.eval()(wav, lengths),
        mixing.train()(wav[:1], lengths[:1]),
        UtteranceMixing(mixing_prob=0.0).train()(wav, lengths),
    ):
        assert torch.equal(output, wav[: output.shape[0]])
        assert not info.mixed.any() and info.energy_ratio_db.isnan().all()


def test_silent_rows_and_bad_arguments():
    wav = torch.zeros(2, 500)
    mixed, info = UtteranceMixing(mixing_prob=1.0).train()(wav, torch.tensor([500, 0]))
    assert torch.equal(mixed, wav) and not info.mixed.any()  # nothing to scale against
    with pytest.raises(ValueError, match="mixing_prob"):
        UtteranceMixing(mixing_prob=1.5)
    with pytest.raises(ValueError, match="energy_ratio_db"):
        UtteranceMixing(energy_ratio_db=(5.0, -5.0))
    with pytest.raises(ValueError, match="lengths"):
        UtteranceMixing()(wav, torch.tensor([1]))
