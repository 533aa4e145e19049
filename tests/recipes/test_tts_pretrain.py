"""Smoke test of recipes/tts_pretrain: the whole grid runs (debug=tiny) and writes its outputs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechssl.config import compose
from speechssl.demo import demo_path
from speechssl.tts import OOD_BIN, TacotronConfig, study
from speechssl.tts.text import normalize_text
from speechssl.typed import to_dataclass

REPO = Path(__file__).resolve().parents[2]
FRACTIONS = ["0", "0.125", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tts_pretrain")
    ood = tmp_path_factory.mktemp("tts_ood") / "ood.txt"  # run_dir holds only the run's files
    ood.write_text("Reboot the router.\nThe comet passed the moon.\n")
    command = [
        sys.executable, str(REPO / "recipes" / "tts_pretrain" / "run.py"), "debug=tiny",
        f"run_dir={run_dir}", "pretrain.fractions=[0,0.125,1.0]", "test.per_bin=2",
        "test.num_bins=2", "test.min_ood=2", "target.num_dev=2", f"test.ood_sentences={ood}",
        "evaluation.max_length_ratio=1.0", "evaluation.griffin_lim_iters=4",
        "evaluation.num_alignment_plots=1", "evaluation.with_f0=false", "evaluation.batch_size=4",
    ]  # fmt: skip
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return run_dir, json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow  # a whole-recipe run
def test_table_cis_deltas_bins_wavs_and_plots(tiny_run):
    run_dir, results = tiny_run
    assert results["bins"]["names"] == ["low", "high"] and len(results["bins"]["thresholds"]) == 1
    assert results["bins"]["counts"] == {"low": 2, "high": 2, OOD_BIN: 2}
    similarity = results["bins"]["similarity"]
    assert similarity["low"]["mean"] < similarity["high"]["mean"]
    cells = {(f"{row['fraction']:g}", row["bin"], row["metric"]): row for row in results["table"]}
    assert {key[:2] for key in cells} == {
        (f, b) for f in FRACTIONS for b in ("low", "high", OOD_BIN)
    }
    for (_, name, metric), cell in cells.items():
        low, high = cell["ci95"]
        assert low <= cell["mean"] <= high and cell["n_items"] == 2
        if metric == "attention_focus_rate":
            assert 0 < cell["mean"] <= 1
    for fraction in FRACTIONS:  # OOD sentences have no reference: no MCD
        assert (fraction, "low", "mcd_dtw_db") in cells and (
            fraction,
            OOD_BIN,
            "mcd_dtw_db",
        ) not in cells
    # paired deltas: each fraction - 0 and 1/8 - 1, per bin, on the same sentences
    pairs = {(row["a"], row["b"]) for row in results["deltas"]}
    assert pairs == {(0.125, 0.0), (1.0, 0.0), (0.125, 1.0)}
    for row in results["deltas"]:
        assert row["ci95"][0] <= row["delta"] <= row["ci95"][1] and row["n_items"] == 2
        assert row["significant"] == (row["ci95"][0] > 0 or row["ci95"][1] < 0)
    for fraction in FRACTIONS:
        for sentence in results["test_sentences"]:
            wav = run_dir / "wavs" / f"fraction_{fraction}" / f"{sentence['id']}.wav"
            assert wav.stat().st_size > 1000
        seconds = results["stages"][fraction]["seconds"]
        assert set(seconds) == {"pretrain_s", "finetune_s", "synthesis_s", "scoring_s"}
    for metric in ("mcd_dtw_db", "attention_diagonality", "stop_length_error"):
        assert (run_dir / f"{metric}.png").stat().st_size > 1000
    assert len(list(run_dir.glob("alignment_*.png"))) == 1
    markdown = (run_dir / "results.md").read_text()
    assert "| 1/8 |" in markdown and f"{results['bins']['thresholds'][0]:.3f}" in markdown
    assert "| 1/8 - 1 |" in markdown  # the deltas table


@pytest.mark.slow  # a whole-recipe run
def test_budgets_scale_with_the_subset_and_finetuning_early_stops(tiny_run):
    _, results = tiny_run
    budget = results["budget"]
    # debug=tiny caps every stage at trainer.max_steps=4: 1/8 (4 clips, batch 4) and
    # 1 (30 clips) both reach the cap; the uncapped budget is epochs x clips / batch
    assert budget["pretrain_steps"] == {"0": 0, "0.125": 4, "1": 4}
    # the default criterion is free-running: its value per evaluation is recorded, best.pt
    # is its best evaluation, and each fraction says why its fine-tuning ended
    assert budget["finetune_select_on"] == "dev_mcd"
    assert set(budget["finetune_stop_reason"]) == set(FRACTIONS)
    for fraction in FRACTIONS:
        finetune = results["stages"][fraction]["finetune"]
        assert finetune["best_step"] >= 1 and math.isfinite(finetune["best_value"])
        assert budget["finetune_stop_reason"][fraction] == finetune["stop_reason"]
        assert finetune["criterion"] == "free_mcd_dtw_sl_db"
        curve = finetune["dev_curve"]
        assert curve and curve[-1]["step"] == finetune["steps_run"]
        best = min(curve, key=lambda row: row["free_mcd_dtw_sl_db"])
        assert best["free_mcd_dtw_sl_db"] == finetune["best_value"]
        assert all(
            math.isfinite(row["loss"]) and row["free_stop_length_error"] >= 0 for row in curve
        )
    assert (tiny_run[0] / "finetune_dev_curves.png").stat().st_size > 1000


@pytest.mark.slow  # a whole-recipe run
def test_subsets_nested_and_no_test_text_in_training_sets(tiny_run):
    run_dir, results = tiny_run
    subsets = json.loads((run_dir / "subsets.json").read_text())
    assert subsets["0"] == [] and len(subsets["0.125"]) == 4 and len(subsets["1"]) == 30
    assert set(subsets["0.125"]) <= set(subsets["1"])

    def key(text):
        return " ".join(normalize_text(text).lower().split())

    train_texts = {key(text) for text in results["target"]["train_texts"]}
    held_out = [s for s in results["test_sentences"] if s["reference"] is not None]
    lj_clips = len((demo_path("ljspeech") / "metadata.csv").read_text().splitlines())
    assert len(held_out) == 4 and len(results["target"]["dev_ids"]) == 2
    assert len(train_texts) == lj_clips - 4 - 2
    assert not {key(s["text"]) for s in held_out} & train_texts
    assert not {s["id"] for s in held_out} & set(results["target"]["train_ids"])
    assert not set(results["target"]["dev_ids"]) & set(results["target"]["train_ids"])
    assert results["pretrain_dropped_test_texts"] == []  # the pool reads none of them


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("test.per_bin=40", "target set too small"),
        ("finetune.select_on=dev_bleu", "finetune.select_on='dev_bleu': expected one of"),
    ],
)
def test_a_target_set_too_small_or_an_unknown_criterion_stops_with_one_line(
    tmp_path, option, message
):
    command = [
        sys.executable, str(REPO / "recipes" / "tts_pretrain" / "run.py"), "debug=tiny",
        f"run_dir={tmp_path}", option,
    ]  # fmt: skip
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], completed.stderr[-2000:]


@pytest.mark.slow  # a whole-recipe run
def test_finetuning_starts_from_the_pretrained_weights(tiny_run):
    _, results = tiny_run
    assert math.isnan(results["stages"]["0"]["finetune"]["init_max_abs_difference"])
    for fraction in ("0.125", "1"):
        stage = results["stages"][fraction]
        assert stage["finetune"]["init_max_abs_difference"] == 0.0
        checkpoint = stage["pretrain"]["checkpoint"]
        pretrained = torch.load(checkpoint, weights_only=True)["model"]
        config = to_dataclass(compose("tts_pretrain", ["debug=tiny"]).tts, TacotronConfig)
        model, speaker, _ = study.finetune_model(config, checkpoint)
        state = model.state_dict()
        speakers = pretrained["speaker_embedding.weight"].shape[0]
        assert speaker == speakers  # the target is a new row after the pre-trained speakers
        for name, value in pretrained.items():
            assert torch.equal(state[name][:speakers] if "speaker" in name else state[name], value)
        # and fine-tuning then moved the weights away from there
        finetuned = sorted(
            Path(checkpoint).parents[2].glob(f"finetune_{fraction}/checkpoints/*.pt")
        )
        moved = torch.load(finetuned[-1], weights_only=True)["model"]
        assert not torch.equal(moved["tacotron.decoder.linear_projection.weight"],
                               pretrained["tacotron.decoder.linear_projection.weight"])  # fmt: skip
