"""Text front end, nested pre-training subsets and training-text similarity bins."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch

from speechssl.demo import demo_path, demo_root
from speechssl.tts.similarity import OOD_BIN, TrainingTextSimilarity, similarity_bins
from speechssl.tts.subsets import nested_fractions
from speechssl.tts.text import SYMBOLS, CharacterFrontend, normalize_text, number_to_words


def test_normalisation_of_numbers_and_abbreviations():
    assert normalize_text("Dr. Baker closed the chapel.") == "doctor baker closed the chapel."
    assert normalize_text("York printers, 1823.") == "york printers, eighteen twenty-three."
    assert normalize_text("He came 23 times.") == "he came twenty-three times."
    assert normalize_text("In 2005, 1,200 men & 3.5 boys.") == (
        "in two thousand five, one thousand two hundred men and three point five boys."
    )
    assert normalize_text("the 1st, 2nd and 12th") == "the first, second and twelfth"
    assert normalize_text("Café at St. Paul's") == "cafe at saint paul's"
    assert number_to_words(1_000_001) == "one million one"


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text)


def test_demo_raw_text_normalises_to_the_corpus_normalised_text():
    """LJSpeech's own normalised column is the reference for numbers and Mr./Dr."""
    lines = (demo_path("ljspeech") / "metadata.csv").read_text().splitlines()
    rows = [line.split("|")[1:] for line in lines]
    assert sum(any(c.isdigit() for c in raw) for raw, _ in rows) >= 3  # numbers to expand
    for raw, normalised in rows:
        # LJ's column writes numbers out but keeps "Mrs."/"Mr.": expand both alike; the
        # words must agree (LJ writes "five thousand, five hundred" with a comma, we do not)
        assert _words(normalize_text(raw)) == _words(normalize_text(normalised))


def test_encode_drops_and_counts_unknown_characters_and_pads_batches():
    frontend = CharacterFrontend()
    tokens = frontend.encode("Hi #1 日!")
    assert frontend.decode(tokens) == "hi one !"
    assert frontend.dropped == {"#": 1, "日": 1}
    assert tokens[-1] == frontend.eos_id and bool((tokens[:-1] >= 2).all())
    batch, lengths = frontend.batch_encode(["a", "abc"])
    assert batch.shape == (2, 4) and lengths.tolist() == [2, 4]
    assert batch[0, 2:].tolist() == [0, 0]  # zero padding is the pad id
    assert frontend.num_symbols == len(SYMBOLS) and len(set(SYMBOLS)) == len(SYMBOLS)
    with pytest.raises(ValueError, match="no character"):
        frontend.encode("日本")  # nothing left, and no EOS-only sequences from junk
    with pytest.raises(ValueError, match="no character"):
        CharacterFrontend(append_eos=False).encode("###")


def _pool(num_speakers=6, per_speaker=(3, 8, 5, 1, 12, 7)):
    return [
        (f"spk{s}_{u:03d}", f"spk{s}") for s in range(num_speakers) for u in range(per_speaker[s])
    ]


@pytest.mark.parametrize("mode", ["round_robin", "speakers"])
def test_nested_fractions_are_nested_deterministic_and_sized(mode):
    pool = _pool()
    fractions = (0, 0.125, 0.25, 0.5, 1)
    subsets = nested_fractions(pool, fractions, seed=3, mode=mode)
    again = nested_fractions(list(reversed(pool)), fractions, seed=3, mode=mode)
    assert subsets == again  # deterministic and independent of the input order
    assert subsets != nested_fractions(pool, fractions, seed=4, mode=mode)
    assert subsets[0] == []
    assert sorted(subsets[1]) == sorted(uid for uid, _ in pool)
    for small, large in itertools.pairwise(fractions):
        assert set(subsets[small]) <= set(subsets[large])
        assert len(subsets[small]) == (0 if small == 0 else max(1, round(small * len(pool))))
    speakers_in_half = {uid.split("_")[0] for uid in subsets[0.5]}
    if mode == "round_robin":  # 18 of 36 utterances: every speaker is represented
        assert len(speakers_in_half) == 6
    else:  # whole speakers: some speakers are entirely absent
        assert len(speakers_in_half) < 6


def test_nested_fractions_reject_bad_input():
    with pytest.raises(ValueError, match="appears twice"):
        nested_fractions([("a", "s"), ("a", "t")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nested_fractions(_pool(), fractions=(1.5,))


def test_similarity_is_fitted_on_training_text_only():
    training = ["doctor baker closed the chapel", "printed in eighteen twelve"]
    test = ["doctor baker closed the chapel", "zebra xylophone quiz"]
    similarity = TrainingTextSimilarity(training)
    scores = similarity.score(test)
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] < 0.2
    vocabulary = similarity.vocabulary
    # n-grams that occur only in the test text never enter the vocabulary
    assert "zeb" not in vocabulary and "xyl" not in vocabulary
    assert {"doc", "pel"} <= vocabulary
    similarity.score(test + ["quizzical zebras"])  # scoring never refits
    assert similarity.vocabulary == vocabulary


def test_similarity_on_demo_split_and_bins_with_ood():
    lines = (demo_path("ljspeech") / "metadata.csv").read_text().splitlines()
    texts = [line.split("|")[2] for line in lines]
    training, held_out = texts[:28], texts[28:]
    ood = (demo_root() / "ood_sentences.txt").read_text().splitlines()
    similarity = TrainingTextSimilarity(training)
    assert not (set(similarity.vocabulary) - _char_wb_ngrams(training))
    scores = similarity.score(held_out + ood)
    in_domain, out_of_domain = scores[: len(held_out)], scores[len(held_out) :]
    # the demo's OOD text is less like LJ text than held-out LJ sentences are, on average
    assert np.mean(out_of_domain) < np.mean(in_domain) - 0.03
    flags = [False] * len(held_out) + [True] * len(ood)
    bins = similarity_bins(scores, num_bins=3, out_of_domain=flags)
    assert bins.labels[len(held_out) :] == [OOD_BIN] * len(ood)
    assert len(bins.thresholds) == 2 and bins.thresholds[0] <= bins.thresholds[1]
    record = bins.to_dict()
    assert sum(record["counts"].values()) == len(scores) and record["counts"][OOD_BIN] == len(ood)
    fixed = similarity_bins([0.1, 0.5, 0.95], thresholds=[0.4, 0.9])
    assert fixed.labels == ["low", "mid", "high"]
    with pytest.raises(ValueError, match="increase"):
        similarity_bins([0.1], thresholds=[0.5, 0.5])


def _char_wb_ngrams(texts):
    """All 2-4 character n-grams of space-padded words (sklearn's char_wb, lower-cased)."""
    grams = set()
    for text in texts:
        for word in normalize_text(text).split():
            padded = f" {word} "
            for size in (2, 3, 4):
                grams.update(padded[i : i + size] for i in range(len(padded) - size + 1))
    return grams


def test_batch_encode_matches_single_encodes():
    frontend = CharacterFrontend()
    texts = ["Mr. Cotton kept the yard.", "Hi."]
    tokens, lengths = frontend.batch_encode(texts)
    for row, text in enumerate(texts):
        single = frontend.encode(text)
        assert torch.equal(tokens[row, : lengths[row]], single)
