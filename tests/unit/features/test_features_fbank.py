"""Fbank and MFCC: parity with torchaudio's Kaldi functions on real speech, under padding."""

import pytest
import torch
import torchaudio.functional as AF
from torchaudio.compliance import kaldi

from speechssl.features import MFCC, Fbank, frame_lengths, lengths_to_mask


@pytest.mark.parametrize("n_mels", [80, 23])
def test_fbank_matches_kaldi_per_utterance_whatever_the_padding(speech_16k, n_mels, padded):
    wavs = speech_16k + [speech_16k[0][:399], speech_16k[1][:400], speech_16k[2][:4321]]
    batch, lengths = padded(wavs)
    feats, feat_lengths = Fbank(n_mels=n_mels)(batch, lengths)
    assert feats.shape == (len(wavs), int(feat_lengths.max()), n_mels)
    for row, wav in enumerate(wavs):
        if wav.numel() < 400:  # torchaudio refuses; Kaldi's rule gives no frame
            assert feat_lengths[row] == 0
            continue
        reference = kaldi.fbank(wav[None], num_mel_bins=n_mels, dither=0.0)
        assert int(feat_lengths[row]) == reference.size(0)
        assert (feats[row, : reference.size(0)] - reference).abs().max() <= 1e-3
    # frames past each length are exactly zero despite the noisy padding
    padding = ~lengths_to_mask(feat_lengths, feats.size(1))
    assert feats[padding].eq(0).all()


def test_batched_equals_single_utterance(speech_16k, padded):
    fbank = Fbank(n_mels=40)
    batch, lengths = padded(speech_16k)
    feats, feat_lengths = fbank(batch, lengths)
    for row, wav in enumerate(speech_16k):
        single, single_lengths = fbank(wav[None], torch.tensor([wav.numel()]))
        assert single_lengths.item() == feat_lengths[row]
        torch.testing.assert_close(feats[row, : single.size(1)], single[0], atol=1e-5, rtol=0)


def test_chunking_does_not_change_the_result(speech_16k, padded):
    batch, lengths = padded(speech_16k[:2])
    whole = Fbank(cpu_chunk_frames=100_000)(batch, lengths)[0]
    torch.testing.assert_close(Fbank(cpu_chunk_frames=7)(batch, lengths)[0], whole)


def test_plain_mode_has_kaldi_frame_counts_and_zero_padding(speech_16k, padded):
    batch, lengths = padded(speech_16k[:3])
    feats, feat_lengths = Fbank(kaldi_compatible=False)(batch, lengths)
    assert feat_lengths.tolist() == frame_lengths(lengths, 400, 160).tolist()
    assert torch.isfinite(feats).all()
    assert feats[~lengths_to_mask(feat_lengths, feats.size(1))].eq(0).all()
    for row, wav in enumerate(speech_16k[:3]):
        single = Fbank(kaldi_compatible=False)(wav[None], lengths[row : row + 1])[0][0]
        assert single.size(0) == feat_lengths[row]
        torch.testing.assert_close(feats[row, : single.size(0)], single, atol=1e-4, rtol=0)


def test_mfcc_matches_fairseq_hubert_dump(speech_16k, padded):
    batch, lengths = padded(speech_16k)
    feats, feat_lengths = MFCC()(batch, lengths)
    assert feats.size(-1) == 39
    for row, wav in enumerate(speech_16k):
        # fairseq examples/hubert/simple_kmeans/dump_mfcc_feature.py, per utterance
        mfccs = kaldi.mfcc(wav[None], sample_frequency=16000, use_energy=False)
        mfccs = mfccs.transpose(0, 1)  # (time, freq) -> (freq, time)
        deltas = AF.compute_deltas(mfccs)
        ddeltas = AF.compute_deltas(deltas)
        reference = torch.cat([mfccs, deltas, ddeltas], dim=0).transpose(0, 1)
        assert int(feat_lengths[row]) == reference.size(0)
        assert (feats[row, : reference.size(0)] - reference).abs().max() <= 1e-3
    assert feats[~lengths_to_mask(feat_lengths, feats.size(1))].eq(0).all()


def test_frame_lengths_follow_kaldi_and_centred_rules():
    samples = torch.tensor([0, 399, 400, 559, 560, 16000])
    assert frame_lengths(samples, 400, 160).tolist() == [0, 0, 1, 1, 2, 98]
    assert frame_lengths(samples, 400, 160, snip_edges=False).tolist() == [1, 3, 3, 4, 4, 101]
    assert lengths_to_mask(torch.tensor([0, 2]), 3).tolist() == [
        [False, False, False],
        [True, True, False],
    ]


@pytest.mark.parametrize(
    ("wav", "lengths", "message"),
    [
        (torch.zeros(2, 800), torch.tensor([800, 801]), "exceeds"),
        (torch.zeros(2, 800), torch.tensor([800, 0]), "positive length"),
        (torch.zeros(2, 800), torch.tensor([800]), "shape"),
        (torch.zeros(2, 800), torch.tensor([800.0, 500.0]), "integers"),
        (torch.zeros(800), torch.tensor([800]), r"\(B, T\)"),
        (torch.zeros(1, 2, 800), torch.tensor([800]), r"\(B, T\)"),
        (torch.zeros(2, 800, dtype=torch.int16), torch.tensor([800, 800]), "floating"),
    ],
)
@pytest.mark.parametrize("transform", [Fbank, MFCC])
def test_bad_input_raises_value_error(transform, wav, lengths, message):
    with pytest.raises(ValueError, match=message):
        transform()(wav, lengths)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_samples_are_rejected_only_inside_the_valid_length(bad):
    wav = torch.randn(2, 1000)
    wav[1, 900] = bad
    feats, _ = Fbank()(wav, torch.tensor([1000, 800]))  # the bad sample is padding: fine
    assert torch.isfinite(feats).all()
    with pytest.raises(ValueError, match="non-finite"):
        Fbank()(wav, torch.tensor([1000, 1000]))


def test_float32_features_under_autocast_and_from_float64_input(speech_16k, padded):
    batch, lengths = padded(speech_16k[:2])
    fbank = Fbank()
    expected, _ = fbank(batch, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast, _ = fbank(batch, lengths)
    from_double, _ = fbank(batch.double(), lengths)
    assert under_autocast.dtype == from_double.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected)
    torch.testing.assert_close(from_double, expected)
