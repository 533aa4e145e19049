"""Utterance and global CMVN: statistics from valid frames only, stats saved as buffers."""

import pytest
import torch

from speechssl.features import Fbank, GlobalCMVN, UtteranceCMVN, lengths_to_mask


def _noisy_padded(generator, lengths, num_frames=12, dim=4):
    """Features with a mean of 3 and std of 2 at valid frames and huge values in the padding."""
    feats = torch.randn(len(lengths), num_frames, dim, generator=generator) * 2 + 3
    lengths = torch.tensor(lengths)
    padding = ~lengths_to_mask(lengths, num_frames)
    feats[padding] = float("nan")  # any leak would show
    return feats, lengths


def test_utterance_cmvn_uses_only_valid_frames():
    feats, lengths = _noisy_padded(torch.Generator().manual_seed(0), [12, 7, 1, 0])
    normalized, out_lengths = UtteranceCMVN(eps=1e-12)(feats, lengths)
    assert torch.equal(out_lengths, lengths)
    for row, length in enumerate(lengths.tolist()[:2]):
        valid = feats[row, :length]
        expected = (valid - valid.mean(0)) / valid.std(0, unbiased=False)
        torch.testing.assert_close(normalized[row, :length], expected)
    assert normalized[2].eq(0).all()  # one frame: centred to zero, no division by zero
    assert normalized[~lengths_to_mask(lengths, 12)].eq(0).all()
    assert torch.isfinite(normalized).all()


def test_utterance_cmvn_batched_equals_single_on_speech(speech_16k):
    fbank = Fbank()
    lengths = torch.tensor([wav.numel() for wav in speech_16k])
    batch = torch.zeros(len(speech_16k), int(lengths.max()))
    for row, wav in enumerate(speech_16k):
        batch[row, : wav.numel()] = wav
    normalized, _ = UtteranceCMVN()(*fbank(batch, lengths))
    single, _ = UtteranceCMVN()(*fbank(speech_16k[-1][None], lengths[-1:]))
    torch.testing.assert_close(normalized[-1, : single.size(1)], single[0], atol=1e-4, rtol=0)


def test_global_cmvn_matches_statistics_of_all_valid_frames():
    generator = torch.Generator().manual_seed(1)
    batches = [_noisy_padded(generator, [12, 5, 3]), _noisy_padded(generator, [1, 0, 9, 12])]
    cmvn = GlobalCMVN(4).train()
    for feats, lengths in batches:
        cmvn(feats, lengths)
    valid = torch.cat([f[lengths_to_mask(l, 12)] for f, l in batches]).double()
    assert int(cmvn.count) == valid.size(0) == 42
    torch.testing.assert_close(cmvn.mean, valid.mean(0))
    torch.testing.assert_close(cmvn.variance, valid.var(0, unbiased=False))

    # statistics travel in the state dict and freeze in eval mode
    restored = GlobalCMVN(4)
    restored.load_state_dict(cmvn.state_dict())
    restored.eval()
    feats, lengths = batches[0]
    normalized, _ = restored(feats, lengths)
    assert int(restored.count) == 42
    expected = (feats[0] - valid.mean(0).float()) / (
        valid.var(0, unbiased=False).float() + 1e-5
    ).sqrt()
    torch.testing.assert_close(normalized[0], expected, atol=1e-5, rtol=1e-5)
    assert normalized[~lengths_to_mask(lengths, 12)].eq(0).all()


def test_cmvn_rejects_bad_input():
    with pytest.raises(ValueError, match="lengths"):
        UtteranceCMVN()(torch.zeros(2, 5, 3), torch.tensor([6, 1]))
    with pytest.raises(ValueError, match="features"):
        GlobalCMVN(4)(torch.zeros(2, 5, 3), torch.tensor([5, 1]))
    with pytest.raises(ValueError, match=r"\(B, F, D\)"):
        UtteranceCMVN()(torch.zeros(5, 3), torch.tensor([5]))
