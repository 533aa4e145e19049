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
from speechssl.tts.study.training import _loader
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
    with pytest.raises(ValueError, match="^target set too small: 8 distinct sentences"):
        study.split_target(rows, num_test=8)
    with pytest.raises(ValueError, match="target set too small"):
        study.split_target(rows, num_test=3, min_train=6)  # 8 sentences: 3 + 5 at most
    train, dev = study.hold_out_dev(rows, num_dev=2, seed=0)
    assert len(dev) == 2 and not {_key(r["text"]) for r in dev} & {_key(r["text"]) for r in train}
    assert len(train) + len(dev) == len(rows)


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
    # OOD text is on average less like the training text than the held-out LJ sentences
    # (real text shares common words, so single OOD sentences can score above some of them)
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
    sentences, bins = study.build_test_set(
        train, test, ["A quick tour.", "Call me back at noon, please."], num_bins=2
    )
    config = TacotronConfig.preset("tiny")
    torch.manual_seed(0)
    model = TacotronTTS(config)
    rate = study.frames_per_character(train, config)
    assert 3.0 < rate < 12.0  # LJ Speech: about 14 characters per second, 86 frames per second
    vocoder = GriffinLimVocoder.from_config(config, n_iter=2)
    options = {"frames_per_char": rate, "max_length_ratio": 1.0, "with_f0": True}
    references = study.load_references(sentences, config)
    assert set(references) == {s.id for s in sentences if s.in_domain}
    timings = {}
    rows, kept = study.evaluate_model(
        model,
        0,
        sentences,
        vocoder,
        tmp_path,
        keep_alignments=[sentences[0].id],
        batch_size=3,  # two batches
        references=references,
        timings=timings,
        **options,
    )
    assert timings["synthesis_s"] > 0 and timings["scoring_s"] > 0
    # seeded batched synthesis repeats; references loaded inside give the same scores
    again, _ = study.evaluate_model(
        model, 0, sentences, vocoder, tmp_path / "again", batch_size=3, **options
    )
    assert [row["mcd_dtw_db"] for row in again[:2]] == [row["mcd_dtw_db"] for row in rows[:2]]
    assert [row["id"] for row in rows] == [sentence.id for sentence in sentences]
    assert [row["bin"] for row in rows][-1] == OOD_BIN and "mcd_dtw_db" not in rows[-1]
    for row in rows[:2]:
        assert row["mcd_dtw_db"] > 0 and row["mcd_dtw_sl_db"] >= row["mcd_dtw_db"]
        assert 0 <= row["voicing_decision_error"] <= 1  # pyin ran on the vocoded WAV
    for row, sentence in zip(rows, sentences, strict=True):
        assert (tmp_path / f"{sentence.id}.wav").stat().st_size > 1000
        # each sentence is cut at its own length guard although its batch ran longer
        guard_frames = (math.ceil(row["expected_frames"] / config.frames_per_step) + 1) * (
            config.frames_per_step
        )
        assert 0 < row["attention_focus_rate"] <= 1 and row["frames"] <= guard_frames
        assert not row["stopped"] or row["frames"] < guard_frames
    assert kept[sentences[0].id].ndim == 2

    summary = study.summarize([{**row, "fraction": 0.0} for row in rows], [*bins.names, OOD_BIN])
    counts = {(r["bin"], r["metric"]): r["n_items"] for r in summary["table"]}
    assert counts[OOD_BIN, "stop_length_error"] == 2 and (OOD_BIN, "mcd_dtw_db") not in counts
    assert summary["deltas"] == []  # one fraction: nothing to compare
    markdown = study.results_markdown(summary, bins, {0.0: {"utterances": 0, "speakers": 0}})
    assert "| 0 | 0 (0) | ood | 2 |" in markdown and f"{bins.thresholds[0]:.3f}" in markdown


def test_cis_and_paired_deltas_come_from_speechssl_stats(monkeypatch):
    """The table's CIs are speechssl.stats' bootstraps over sentences (same numbers), and
    every delta pairs the same sentences of both fractions."""
    from speechssl import stats

    generator = np.random.default_rng(0)
    rows = []
    for fraction, shift in ((0.0, 2.0), (0.125, 0.3), (1.0, 0.0)):
        for index in range(20):
            value = 5.0 + shift + 0.1 * generator.standard_normal()
            rows.append(
                {
                    "id": f"s{index}",
                    "fraction": fraction,
                    "bin": "low",
                    "mcd_dtw_sl_db": value,
                    "stop_length_error": 0.1,
                    "stopped": True,
                }
            )
    calls = []
    original = stats.paired_bootstrap_delta
    monkeypatch.setattr(
        study.summary,
        "paired_bootstrap_delta",
        lambda *a, **k: calls.append(a) or original(*a, **k),
    )
    summary = study.summarize(rows, ["low"], num_resamples=300)
    cell = next(
        r for r in summary["table"] if r["fraction"] == 1.0 and r["metric"] == "mcd_dtw_sl_db"
    )
    values = np.array([r["mcd_dtw_sl_db"] for r in rows if r["fraction"] == 1.0])
    expected = stats.bootstrap_metric(
        lambda _, v: float(np.mean(v)), values, [values], num_resamples=300
    )
    assert cell["n_items"] == 20
    assert cell["mean"] == pytest.approx(expected.mean)
    assert cell["ci95"] == pytest.approx([expected.low, expected.high])
    deltas = {(d["a"], d["b"], d["metric"]): d for d in summary["deltas"]}
    assert set(deltas) >= {(1.0, 0.0, "mcd_dtw_sl_db"), (0.125, 1.0, "mcd_dtw_sl_db")}
    assert len(calls) == len(summary["deltas"])
    full = deltas[1.0, 0.0, "mcd_dtw_sl_db"]
    assert full["delta"] == pytest.approx(-2.0, abs=0.1) and full["significant"]
    assert full["better"] == 1.0  # lower MCD is better
    eighth = deltas[0.125, 1.0, "mcd_dtw_sl_db"]
    assert eighth["significant"] and eighth["better"] == 1.0
    # identical values on the same sentences: exactly 0 with a zero-width CI
    same = deltas[1.0, 0.0, "stop_length_error"]
    assert same["delta"] == 0.0 and same["ci95"] == [0.0, 0.0] and not same["significant"]


def test_bin_contrasts_compare_a_bins_delta_with_the_high_bins(monkeypatch):
    """A benefit planted in the low bin only: its delta minus the high bin's is negative
    with a CI excluding 0, the mid bin's (no planted difference) is not resolved, and the
    CI is speechssl.stats' unpaired bootstrap (not a copy)."""
    from speechssl import stats

    generator = np.random.default_rng(1)
    benefit = {"low": -1.0, "mid": 0.0, "high": 0.0}
    rows = []
    for name in ("low", "mid", "high"):
        for index in range(20):
            base = 6.0 + generator.standard_normal()  # the sentence's difficulty, shared
            for fraction, shift in ((0.0, 0.0), (1.0, benefit[name])):
                noise = 0.2 * generator.standard_normal()
                row = {"id": f"{name}{index}", "bin": name, "fraction": fraction}
                rows.append({**row, "mcd_dtw_sl_db": base + shift + noise, "stopped": True})
    calls = []
    original = stats.unpaired_bootstrap_difference
    monkeypatch.setattr(
        study.summary,
        "unpaired_bootstrap_difference",
        lambda *a, **k: calls.append(a) or original(*a, **k),
    )
    summary = study.summarize(rows, ["low", "mid", "high", OOD_BIN], num_resamples=300)
    contrasts = {(c["bin"], c["metric"]): c for c in summary["contrasts"]}
    low, mid = contrasts["low", "mcd_dtw_sl_db"], contrasts["mid", "mcd_dtw_sl_db"]
    assert low["reference_bin"] == "high" and ("high", "mcd_dtw_sl_db") not in contrasts
    assert low["contrast"] == pytest.approx(-1.0, abs=0.2) and low["significant"]
    assert not mid["significant"] and mid["n_items"] == [20, 20]
    assert len(calls) == len(summary["contrasts"])
    expected = original(calls[0][0], calls[0][1], num_resamples=300)
    first = summary["contrasts"][0]
    assert [first["contrast"], *first["ci95"]] == pytest.approx(list(expected))


def test_demo_test_sets_have_power_and_no_leakage(demo_rows):
    """The real LJ Speech demo fills 3 bins x 20 held-out sentences + 20 OOD, keeps 8 dev
    sentences and >= 20 to train on; no held-out text is in the fine-tuning or pre-training
    text or the TF-IDF vocabulary; the bins differ in mean similarity by their CIs."""
    target, pool = demo_rows
    train, test = study.split_target(target, 60, seed=0, min_train=28)
    train, dev = study.hold_out_dev(train, 8, seed=0)
    ood = study.read_sentences(demo_root() / "ood_sentences.txt")
    sentences, bins = study.build_test_set(train, test, ood, num_bins=3)
    study.check_test_set(sentences, bins.names, per_bin=20, min_ood=20)
    held_out = {_key(s.text) for s in sentences}
    assert len(train) >= 20 and len(dev) == 8
    assert not held_out & {_key(r["text"]) for r in train + dev}
    # the vocabulary is the training text's: a held-out sentence's own n-grams are not in it
    similarity = study.TrainingTextSimilarity([row["text"] for row in train])
    test_only = study.TrainingTextSimilarity([s.text for s in sentences]).vocabulary
    training_ngrams = study.TrainingTextSimilarity([r["text"] for r in train]).vocabulary
    assert similarity.vocabulary == training_ngrams and test_only - similarity.vocabulary
    # pre-training text: the pool never reads a test sentence (one planted reading is dropped)
    planted = [*pool, {**pool[0], "id": "planted", "text": sentences[0].text}]
    kept, dropped = study.drop_texts(planted, [s.text for s in sentences])
    assert dropped == ["planted"] and len(kept) == len(pool)
    for rows in study.pretraining_subsets(kept, [0.125, 0.5, 1.0]).values():
        assert not held_out & {_key(r["text"]) for r in rows}
    similarity_ci = study.similarity_by_bin(sentences, [*bins.names, OOD_BIN])
    assert [similarity_ci[name]["n_items"] for name in bins.names] == [20, 20, 20]
    for lower, higher in itertools.pairwise(bins.names):
        assert similarity_ci[lower]["ci95"][1] < similarity_ci[higher]["ci95"][0]
    # OOD text (topics LJ never reads) scores below the mid bin; char n-grams of common
    # words keep it level with the low bin
    assert similarity_ci[OOD_BIN]["ci95"][1] < similarity_ci["mid"]["ci95"][0]
    # a target set that cannot fill the bins stops with one line
    with pytest.raises(ValueError, match="^target set too small: 121 distinct") as error:
        study.split_target(target, 3 * 40, seed=0, min_train=28)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="^target set too small: similarity bins"):
        study.check_test_set(sentences, bins.names, per_bin=21, min_ood=20)
    with pytest.raises(ValueError, match="too few out-of-domain sentences"):
        study.check_test_set(sentences, bins.names, per_bin=20, min_ood=40)


def test_finetuning_early_stops_on_the_dev_loss_and_keeps_the_best_weights(demo_rows, tmp_path):
    target, _ = demo_rows
    rows, dev = target[:4], target[4:6]
    torch.manual_seed(0)
    model = TacotronTTS(TacotronConfig.preset("tiny", frames_per_step=4))
    trainer = {"max_steps": 50, "device": "cpu", "tensorboard": False, "num_workers": 0}
    # min_delta is unreachable: the first evaluation is the best, then `patience` more
    checkpoint, result = study.train_tts(
        model,
        rows,
        tmp_path,
        trainer,
        {"lr": 1e-3},
        max_steps=10,
        batch_size=2,
        dev_rows=dev,
        eval_every=1,
        patience=2,
        min_delta=1e9,
    )
    assert result["stop_reason"] == "early_stopping" and result["steps_run"] == 3
    assert result["best_step"] == 1 and checkpoint.name == "best.pt"
    best = torch.load(checkpoint, weights_only=False)["model"]
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in best.items())
    assert study.training_steps(30, 8, 40) == 150 and study.training_steps(4, 8, 40) == 40


def test_finetuning_keeps_the_weights_best_on_the_free_running_dev_criterion(demo_rows, tmp_path):
    """select_on=dev_mcd: every evaluation's free-running criteria are in metrics.jsonl (the
    dev curve), best.pt is the evaluation with the lowest dev MCD-DTW-SL (re-synthesizing
    the dev batch with the kept weights gives that value), and synthesizing the dev set
    does not change the training's random stream."""
    target, _ = demo_rows
    shortest = sorted(target, key=lambda row: float(row["duration"]))  # fast steps
    rows, dev_rows = shortest[:4], shortest[4:6]
    config = TacotronConfig.preset("tiny", frames_per_step=4)
    # max_length_ratio 1: a short length guard keeps the test fast
    trainer = {"max_steps": 50, "device": "cpu", "tensorboard": False, "num_workers": 0}
    options = {"max_steps": 4, "batch_size": 2, "dev_rows": dev_rows, "eval_every": 1}

    def run(folder, select_on, free_running=True):
        torch.manual_seed(0)
        model = TacotronTTS(config)
        dev = study.FreeRunningDev(dev_rows, config, speaker=0, max_length_ratio=1.0)
        checkpoint, result = study.train_tts(
            model, rows, folder, trainer, {"lr": 3e-3}, **options, select_on=select_on,
            free_running_dev=dev if free_running else None,
        )  # fmt: skip
        return model, dev, checkpoint, result

    model, dev, checkpoint, result = run(tmp_path / "mcd", "dev_mcd")
    curve = study.dev_curve(tmp_path / "mcd")
    assert [row["step"] for row in curve] == [1, 2, 3, 4]
    assert all({"loss", "free_mcd_dtw_sl_db", "free_stop_length_error"} <= set(r) for r in curve)
    values = [row["free_mcd_dtw_sl_db"] for row in curve]
    assert len(set(values)) > 1  # the criterion moves, so the choice below is a real one
    best = curve[int(np.argmin(values))]
    assert result["criterion"] == "free_mcd_dtw_sl_db" and checkpoint.name == "best.pt"
    assert result["best_step"] == best["step"] and result["best_value"] == min(values)
    kept = torch.load(checkpoint, weights_only=False)["model"]
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in kept.items())
    assert dev(model)["free_mcd_dtw_sl_db"] == pytest.approx(min(values), abs=1e-9)
    assert (tmp_path / "mcd" / "curves.png").is_file()
    # the dev loss as the criterion, without the synthesis: the same training (the synthesis
    # forked the RNG), the same dev losses, and best.pt by the loss
    _, _, _, loss_result = run(tmp_path / "loss", "dev_loss", free_running=False)
    loss_curve = study.dev_curve(tmp_path / "loss")
    losses = [row["loss"] for row in loss_curve]
    assert losses == [row["loss"] for row in curve] and "free_mcd_dtw_sl_db" not in loss_curve[0]
    assert loss_result["best_step"] == 1 + int(np.argmin(losses))
    with pytest.raises(ValueError, match="select_on='dev_bleu'"):
        study.train_tts(model, rows, tmp_path / "bad", trainer, {}, **options, select_on="dev_bleu")
    with pytest.raises(ValueError, match="needs the free-running dev synthesis"):
        study.train_tts(model, rows, tmp_path / "bad", trainer, {}, **options, select_on="dev_stop")


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_tts_config_group_composes_to_the_presets(preset):
    cfg = compose("tts_pretrain", [f"tts={preset}", "debug=tiny"])
    # the study overrides the decoder's reduction factor (frames per step) only
    assert to_dataclass(cfg.tts, TacotronConfig) == TacotronConfig.preset(preset, frames_per_step=4)
    assert cfg.trainer.max_steps == 4 and cfg.finetune.max_steps == 40  # capped in run.py
    # experiment=tts_pretrain_small: the README's study (all five fractions, a longer cap)
    small = compose("tts_pretrain", [f"tts={preset}", "experiment=tts_pretrain_small"])
    assert list(small.pretrain.fractions) == [0, 0.125, 0.25, 0.5, 1.0]
    assert small.finetune.max_steps > compose("tts_pretrain").finetune.max_steps
    assert (
        compose("tts_pretrain", ["experiment=tts_pretrain_small", "debug=tiny"]).trainer.max_steps
        == 4
    )


def test_each_torchrun_rank_trains_on_its_own_clips(demo_rows, monkeypatch):
    """Under DDP the study's loader shards the clips: two ranks see disjoint halves."""
    from speechssl.train import distributed

    _, pool = demo_rows
    model = TacotronTTS(TacotronConfig.preset("tiny", num_speakers=1))
    seen = {}
    for rank in (0, 1):
        info = distributed.DistributedInfo(rank=rank, local_rank=rank, world_size=2)
        monkeypatch.setattr(distributed, "get_info", lambda info=info: info)
        loader = _loader(pool, model, None, 0, batch_size=4, seed=0, workers=0)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        seen[rank] = list(loader.sampler)
    assert seen[0] and len(seen[0]) == len(seen[1]) == len(pool) // 2
    assert not set(seen[0]) & set(seen[1])
