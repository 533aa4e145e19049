"""SpecAugment: seeded determinism, identity in eval, masks inside each valid length."""

import pytest
import torch

from speechssl.features import SpecAugment, lengths_to_mask


def _features(lengths, num_frames=300, dim=80):
    feats = (
        torch.rand(len(lengths), num_frames, dim, generator=torch.Generator().manual_seed(0)) + 1
    )
    lengths = torch.tensor(lengths)
    return feats * lengths_to_mask(lengths, num_frames).unsqueeze(-1), lengths


@pytest.mark.parametrize("time_warp", [0, 5])
def test_same_seed_same_masks_and_generator_argument(time_warp):
    feats, lengths = _features([300, 180, 40])
    first = SpecAugment(time_warp=time_warp, seed=7)(feats, lengths)[0]
    second = SpecAugment(time_warp=time_warp, seed=7)(feats, lengths)[0]
    other = SpecAugment(time_warp=time_warp, seed=8)(feats, lengths)[0]
    assert torch.equal(first, second) and not torch.equal(first, other)
    through_argument = SpecAugment(time_warp=time_warp)(
        feats, lengths, generator=torch.Generator().manual_seed(7)
    )[0]
    assert torch.equal(first, through_argument)


def test_identity_in_eval_mode():
    feats, lengths = _features([300, 100])
    augment = SpecAugment(time_warp=10, seed=0).eval()
    out, out_lengths = augment(feats, lengths)
    assert out is feats and torch.equal(out_lengths, lengths)


def test_masks_stay_inside_each_valid_length_and_respect_widths():
    feats, lengths = _features([300, 120, 30, 0] * 8)
    augment = SpecAugment(
        freq_mask_width=10, time_mask_width=50, time_mask_ratio=0.2, mask_value=-1.0, seed=3
    )
    out, out_lengths = augment(feats, lengths)
    assert torch.equal(out_lengths, lengths)
    masked = out.eq(-1.0)
    valid = lengths_to_mask(lengths, feats.size(1))
    assert not masked[~valid].any()  # padding untouched
    assert out[~valid].eq(0).all()
    assert masked.any()
    for row, length in enumerate(lengths.tolist()):
        if length == 0:
            continue
        masked_frames = masked[row, :length].all(dim=-1).sum()  # fully masked frames: time masks
        assert masked_frames <= 2 * min(50, int(0.2 * length))
        masked_bins = masked[row, :length].all(dim=0).sum()  # fully masked bins: frequency masks
        assert masked_bins <= 2 * 10
        unmasked = ~masked[row, :length]
        assert torch.equal(out[row, :length][unmasked], feats[row, :length][unmasked])


def test_time_warp_keeps_lengths_padding_and_frame_content_range():
    feats, lengths = _features([300, 200, 11])
    augment = SpecAugment(num_freq_masks=0, num_time_masks=0, time_warp=20, seed=1)
    out, out_lengths = augment(feats, lengths)
    assert torch.equal(out_lengths, lengths)
    valid = lengths_to_mask(lengths, feats.size(1))
    assert out[~valid].eq(0).all()
    assert not torch.equal(out[0], feats[0])
    torch.testing.assert_close(out[2], feats[2])  # too short to warp: untouched
    # a warp only moves and interpolates frames: the first frame stays, values stay in range
    torch.testing.assert_close(out[:2, 0], feats[:2, 0])
    assert out[valid].min() >= 1.0 and out[valid].max() <= 2.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="non-negative"):
        SpecAugment(freq_mask_width=-1)
    with pytest.raises(ValueError, match="lengths"):
        SpecAugment()(torch.zeros(2, 5, 3), torch.tensor([6, 1]))
