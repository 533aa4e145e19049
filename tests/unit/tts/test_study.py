"""The study's data steps (no leakage, nested subsets), fine-tuning start, evaluation, table."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from speechssl.config import compose
from speechssl.data.loaders import load_manifests, prepare_once
from speechssl.demo import demo_path, demo_root
from speechssl.tts import OOD_BIN, GriffinLimVocoder, TacotronConfig, TacotronTTS, study
from speechssl.tts.text import normalize_text
from speechssl.typed import to_dataclass


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("study_data")
    prepare_once("ljspeech", demo_path("ljspeech"), out / "ljspeech")
    prepare_once("libritts", demo_path("libritts"), out / "libritts")
    target = list(load_manifests([out / "ljspeech" / "all.jsonl"]).rows())
    pool = list(load_manifests([out / "libritts" / "train-clean-100.jsonl"]).rows())
    return target, pool


def _key(text):
    return " ".join(normalize_text(text).lower().split())


def test_split_holds_out_test_text_and_drops_duplicate_readings():
    rows = [{"id": f"u{i}", "audio": f"/{i}.wav", "text": f"Sentence {i}."} for i in range(8)]
    rows.append({"id": "u8", "audio": "/8.wav", "text": "SENTENCE  3."})  # a second reading
    train, test = study.split_target(rows, num_test=3, seed=1)
    test_keys = {_key(row["text"]) for row in test}
    assert len(test) == 3 and len(test_keys) == 3
    assert not test_keys & {_key(row["text"]) for row in train}
    assert len(train) + len(test) + ("sentence three." in test_keys) == len(rows)
    assert study.split_target(rows, 3, seed=1) == (train, test)
    assert study.split_target(rows, 3, seed=2)[1] != test
    with pytest.raises(ValueError, match="cannot hold out"):
        study.split_target(rows, num_test=8)


def test_similarity_bins_are_fitted_on_training_text_only(demo_rows):
    target, _ = demo_rows
    train, test = study.split_target(target, num_test=8, seed=0)
    ood = study.read_sentences(demo_root() / "ood_sentences.txt")
    sentences, bins = study.build_test_set(train, test, ood, num_bins=3)
    # no test text in the fine-tuning set, and no n-gram only a test sentence has in the vocabulary
    assert not {_key(r["text"]) for r in test} & {_key(r["text"]) for r in train}
    similarity = study.TrainingTextSimilarity([row["text"] for row in train])
    assert (
        similarity.vocabulary
        == study.TrainingTextSimilarity([row["text"] for row in train]).vocabulary
    )
    test_only = study.TrainingTextSimilarity([row["text"] for row in test]).vocabulary
    assert test_only - similarity.vocabulary  # test text has n-grams training lacks ...
    assert not (test_only - similarity.vocabulary) & similarity.vocabulary  # ... left out
    # bins: quantile thresholds of the held-out scores; OOD sentences all in their own bin
    in_domain = [s for s in sentences if s.in_domain]
    assert [s.bin for s in sentences[len(in_domain) :]] == [OOD_BIN] * len(ood)
    assert len(bins.thresholds) == 2 and bins.names == ["low", "mid", "high"]
    for sentence in in_domain:
        index = ["low", "mid", "high"].index(sentence.bin)
        assert index == int(np.searchsorted(bins.thresholds, sentence.similarity, side="right"))
    # OOD text is less like the training text than the held-out LJSpeech-style sentences
    ood_scores = [s.similarity for s in sentences if not s.in_domain]
    assert np.mean(ood_scores) < np.mean([s.similarity for s in in_domain])
    # leakage is refused
    with pytest.raises(ValueError, match="also in the training text"):
        study.build_test_set(train + test[:1], test, ood)


def test_pretraining_subsets_are_nested_deterministic_and_cover_speakers(demo_rows):
    _, pool = demo_rows
    fractions = [0, 0.125, 0.25, 0.5, 1.0]
    subsets = study.pretraining_subsets(pool, fractions, seed=0)
    ids = {f: [row["id"] for row in subsets[f]] for f in fractions}
    assert [len(ids[f]) for f in fractions] == [0, 4, 8, 15, 30]
    for smaller, larger in itertools.pairwise(fractions):
        assert set(ids[smaller]) <= set(ids[larger])
    assert ids == {
        f: [row["id"] for row in rows]
        for f, rows in study.pretraining_subsets(pool, fractions, seed=0).items()
    }
    assert study.pretraining_subsets(pool, fractions, seed=1)[0.25] != subsets[0.25]
    # round robin: 1/4 (8 clips) already spans all 6 speakers
    assert len({row["speaker"] for row in subsets[0.25]}) == 6


def test_finetuning_model_starts_from_the_pretrained_weights(tmp_path):
    torch.manual_seed(0)
    config = TacotronConfig.preset("tiny", num_speakers=3)
    pretrained = TacotronTTS(config)
    with torch.no_grad():
        for parameter in pretrained.parameters():
            parameter.add_(torch.randn_like(parameter))  # far from any fresh initialisation
    checkpoint = tmp_path / "step.pt"
    torch.save(
        {"model": pretrained.state_dict(), "config": {"tts_model": vars(config)}}, checkpoint
    )
    # the caller's config differs (1 speaker): the checkpoint's own config must win
    model, speaker, difference = study.finetune_model(
        TacotronConfig.preset("tiny"), checkpoint, "mean", seed=0
    )
    assert speaker == 3 and difference == 0.0
    for name, value in pretrained.state_dict().items():
        mine = model.state_dict()[name]
        if name == "speaker_embedding.weight":
            assert torch.equal(mine[:3], value)
            assert torch.allclose(mine[3], value.mean(dim=0))
        else:
            assert torch.equal(mine, value), name
    fresh, speaker, difference = study.finetune_model(TacotronConfig.preset("tiny"), None)
    assert speaker == 0 and math.isnan(difference)
    assert (
        study.max_parameter_difference(fresh, {"speaker_embedding.weight": torch.zeros(1, 64)}) > 0
    )


def test_training_caps_the_batch_at_a_tiny_subset(demo_rows, tmp_path):
    _, pool = demo_rows
    rows = study.pretraining_subsets(pool, [0.125], seed=0)[0.125]  # 4 clips
    torch.manual_seed(0)
    model = TacotronTTS(TacotronConfig.preset("tiny", num_speakers=len(rows)))
    speakers = {name: i for i, name in enumerate(sorted({row["speaker"] for row in rows}))}
    trainer = {"max_steps": 1, "device": "cpu", "tensorboard": False, "num_workers": 0}
    checkpoint, result = study.train_tts(
        model,
        rows,
        tmp_path,
        trainer,
        {"lr": 1e-3},
        max_steps=1,
        batch_size=8,
        speaker_ids=speakers,
    )
    assert checkpoint.is_file() and result["step"] == 1 and math.isfinite(result["train_loss"])
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("utterances_per_s") for row in metrics)


def test_evaluation_scores_references_and_ood_and_writes_wavs(demo_rows, tmp_path):
    target, _ = demo_rows
    train, test = study.split_target(target, num_test=2, seed=0)
    sentences, bins = study.build_test_set(train, test, ["A quick tour."], num_bins=2)
    config = TacotronConfig.preset("tiny")
    torch.manual_seed(0)
    model = TacotronTTS(config)
    rate = study.frames_per_character(train, config)
    assert 1.0 < rate < 10.0  # espeak speech: a few 11.6 ms frames per character
    vocoder = GriffinLimVocoder.from_config(config, n_iter=2)
    rows, kept = study.evaluate_model(
        model,
        0,
        sentences,
        vocoder,
        tmp_path,
        frames_per_char=rate,
        max_length_ratio=1.0,
        with_f0=True,
        keep_alignments=[sentences[0].id],
    )
    again, _ = study.evaluate_model(
        model,
        0,
        sentences[:1],
        vocoder,
        tmp_path / "again",
        frames_per_char=rate,
        max_length_ratio=1.0,
        with_f0=False,
    )
    assert again[0]["mcd_dtw_db"] == rows[0]["mcd_dtw_db"]  # seeded synthesis repeats
    assert [row["bin"] for row in rows][-1] == OOD_BIN and "mcd_dtw_db" not in rows[-1]
    for row in rows[:2]:
        assert row["mcd_dtw_db"] > 0 and row["mcd_dtw_sl_db"] >= row["mcd_dtw_db"]
        assert 0 <= row["voicing_decision_error"] <= 1  # pyin ran on the vocoded WAV
    for row, sentence in zip(rows, sentences, strict=True):
        assert (tmp_path / f"{sentence.id}.wav").stat().st_size > 1000
        assert (
            0 < row["attention_focus_rate"] <= 1
            and row["frames"] <= row["expected_frames"] + 2 * config.frames_per_step
        )
    assert kept[sentences[0].id].ndim == 2

    table = study.summarize([{**row, "fraction": 0.0} for row in rows], [*bins.names, OOD_BIN])
    assert sum(cell["n"] for cell in table) == len(rows)
    markdown = study.results_markdown(table, bins, {0.0: {"utterances": 0, "speakers": 0}})
    assert "| 0 | 0 (0) | ood | 1 |" in markdown and f"{bins.thresholds[0]:.3f}" in markdown


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_tts_config_group_composes_to_the_presets(preset):
    cfg = compose("tts_pretrain", [f"tts={preset}", "debug=tiny"])
    assert to_dataclass(cfg.tts, TacotronConfig) == TacotronConfig.preset(preset)
    assert cfg.trainer.max_steps == 4 and cfg.finetune.max_steps == 60  # capped in run.py


def test_each_torchrun_rank_trains_on_its_own_clips(demo_rows, monkeypatch):
    """Under DDP the study's loader shards the clips: two ranks see disjoint halves."""
    from speechssl.train import distributed

    _, pool = demo_rows
    model = TacotronTTS(TacotronConfig.preset("tiny", num_speakers=1))
    seen = {}
    for rank in (0, 1):
        info = distributed.DistributedInfo(rank=rank, local_rank=rank, world_size=2)
        monkeypatch.setattr(distributed, "get_info", lambda info=info: info)
        loader = study._loader(pool, model, None, 0, batch_size=4, seed=0, workers=0)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        seen[rank] = list(loader.sampler)
    assert seen[0] and len(seen[0]) == len(seen[1]) == len(pool) // 2
    assert not set(seen[0]) & set(seen[1])
