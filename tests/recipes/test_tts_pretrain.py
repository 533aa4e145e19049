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
    ood = run_dir / "ood.txt"
    ood.write_text("Reboot the router.\nThe comet passed the moon.\n")
    command = [
        sys.executable, str(REPO / "recipes" / "tts_pretrain" / "run.py"), "debug=tiny",
        f"run_dir={run_dir}", "pretrain.fractions=[0,0.125,1.0]", "target.num_test=4",
        "test.num_bins=2", f"test.ood_sentences={ood}", "evaluation.max_length_ratio=1.0",
        "evaluation.griffin_lim_iters=4", "evaluation.num_alignment_plots=1", "evaluation.with_f0=false",
    ]  # fmt: skip
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return run_dir, json.loads((run_dir / "results.json").read_text())


def test_table_bins_wavs_and_plots(tiny_run):
    run_dir, results = tiny_run
    assert results["bins"]["names"] == ["low", "high"] and len(results["bins"]["thresholds"]) == 1
    assert results["bins"]["counts"] == {"low": 2, "high": 2, OOD_BIN: 2}
    cells = {(f"{cell['fraction']:g}", cell["bin"]): cell for cell in results["table"]}
    assert set(cells) == {(f, b) for f in FRACTIONS for b in ("low", "high", OOD_BIN)}
    for (_, name), cell in cells.items():
        assert 0 < cell["attention_focus_rate"] <= 1 and math.isfinite(cell["stop_length_error"])
        assert math.isfinite(cell["mcd_dtw_db"]) == (name != OOD_BIN)  # OOD has no reference
    for fraction in FRACTIONS:
        for sentence in results["test_sentences"]:
            wav = run_dir / "wavs" / f"fraction_{fraction}" / f"{sentence['id']}.wav"
            assert wav.stat().st_size > 1000
    for metric in ("mcd_dtw_db", "attention_diagonality", "stop_length_error"):
        assert (run_dir / f"{metric}.png").stat().st_size > 1000
    assert len(list(run_dir.glob("alignment_*.png"))) == 1
    markdown = (run_dir / "results.md").read_text()
    assert "| 1/8 |" in markdown and f"{results['bins']['thresholds'][0]:.3f}" in markdown


def test_subsets_nested_and_no_test_text_in_finetuning_set(tiny_run):
    run_dir, results = tiny_run
    subsets = json.loads((run_dir / "subsets.json").read_text())
    assert subsets["0"] == [] and len(subsets["0.125"]) == 4 and len(subsets["1"]) == 30
    assert set(subsets["0.125"]) <= set(subsets["1"])

    def key(text):
        return " ".join(normalize_text(text).lower().split())

    train_texts = {key(text) for text in results["target"]["train_texts"]}
    held_out = [s for s in results["test_sentences"] if s["reference"] is not None]
    lj_clips = len((demo_path("ljspeech") / "metadata.csv").read_text().splitlines())
    assert len(held_out) == 4 and len(train_texts) == lj_clips - 4
    assert not {key(s["text"]) for s in held_out} & train_texts
    assert not {s["id"] for s in held_out} & set(results["target"]["train_ids"])


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
