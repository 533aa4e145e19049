"""Smoke test of recipes/tpc: every stage runs on the demo corpus and writes its outputs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import speechssl
from speechssl.demo import demo_path
from speechssl.objectives import PredictiveCodingConfig, PredictiveCodingModel
from speechssl.testing import iemocap_subset, speech_commands_subset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tpc")
    # the demo's EmoDB set cut to 3 takes per class and actor (every session, speaker and
    # class; a third of the audio to encode)
    emotion = iemocap_subset(
        demo_path("iemocap"), tmp_path_factory.mktemp("emotion") / "IEMOCAP_full_release"
    )
    # the demo's spoken digits cut to 2 takes per word and speaker (every word and split)
    keyword = speech_commands_subset(
        demo_path("speech_commands"), tmp_path_factory.mktemp("kws"), 2
    )
    command = [
        sys.executable,
        str(REPO / "recipes" / "tpc" / "run.py"),
        "debug=tiny",
        f"run_dir={run_dir}",
        f"emotion.src={emotion}",
        f"keyword.src={keyword}",
        "emotion.max_folds=2",
        "emotion.modes=[fbank,random_frozen,pretrained_frozen,pretrained_finetune]",
    ]
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return run_dir, completed.stdout


@pytest.mark.slow  # a whole-recipe run
def test_results_files_and_metrics_in_range(tiny_run):
    run_dir, stdout = tiny_run
    results = json.loads((run_dir / "results.json").read_text())
    modes = {"fbank", "random_frozen", "pretrained_frozen", "pretrained_finetune"}
    assert set(results["emotion"]) == modes
    cells = {
        (row["upstream"], row["metric"]): row
        for row in results["table"]
        if row["task"] == "emotion"
    }
    # the frozen upstreams also spot keywords (10 words x 2 takes of the test speaker)
    keyword = {row["upstream"]: row for row in results["table"] if row["task"] == "keyword"}
    assert set(keyword) == set(results["keyword"]) == modes - {"pretrained_finetune"}
    assert {row["n_items"] for row in keyword.values()} == {20}
    assert any(
        (delta["a"], delta["b"], delta["task"]) == ("pretrained_frozen", "random_frozen", "keyword")
        for delta in results["deltas"]
    )
    for mode in modes:
        for metric in ("accuracy", "ua"):
            cell = cells[mode, metric]
            assert 0.0 <= cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1] <= 100.0
        runs = results["emotion"][mode]["runs"]
        # random inits: three seeds; fixed upstreams under the probe and the fine-tuned row
        # (finetune_seeds: [0]): one
        assert len(runs) == (3 if mode == "random_frozen" else 1)
        for run in runs:
            summary = run["loso"]
            assert len(summary["folds"]) == 2
            assert len({fold["session"] for fold in summary["folds"]}) == 2
            for key in ("wa_mean", "ua_mean", "wa_std", "ua_std"):
                assert math.isfinite(summary[key]) and 0.0 <= summary[key] <= 1.0, (mode, key)
            assert sum(map(sum, summary["confusion"])) == cells[mode, "accuracy"]["n_items"]
        assert (run_dir / f"confusion_{mode}.png").stat().st_size > 1000
    assert results["emotion"]["pretrained_finetune"]["head"] == "classifier"
    assert results["emotion"]["pretrained_frozen"]["head"] == "linear_probe"
    pairs = {(delta["a"], delta["b"]) for delta in results["deltas"]}
    assert {("pretrained_frozen", "random_frozen"), ("pretrained_frozen", "fbank")} <= pairs
    assert (run_dir / "probe_layers_emotion_pretrained_frozen.png").is_file()
    assert (run_dir / "results.png").is_file()
    markdown = (run_dir / "results.md").read_text()
    assert "| pretrained_frozen |" in markdown and "| upstream | emotion WA (%) |" in stdout
    assert math.isfinite(results["pretrain"]["valid/loss"])
    # the learning signal against the copy-last-frame baseline, on the validation frames
    signals = results["pretrain"]["learning_signals"]
    assert signals["split"] == "valid" and signals["l1_shift3_baseline"] > 0
    assert signals["l1_shift3_ratio"] == pytest.approx(
        signals["l1_shift3"] / signals["l1_shift3_baseline"]
    )
    assert isinstance(results["pretrain"]["learning_warnings"], list)


@pytest.mark.slow  # a whole-recipe run
def test_pretrained_checkpoint_loads_as_a_causal_encoder(tiny_run):
    run_dir, _ = tiny_run
    checkpoint = json.loads((run_dir / "results.json").read_text())["pretrain"]["checkpoint"]
    encoder = speechssl.load_encoder(checkpoint)
    assert not encoder.training and encoder.family == "predictive_transformer"
    wav = torch.randn(1, 16000)
    feats, lengths = encoder.features(wav, torch.tensor([16000]))
    changed = feats.clone()
    changed[:, 50:] += 3.0  # alter the future of frame 49
    before = encoder.forward_features(feats, lengths).last_hidden_state
    after = encoder.forward_features(changed, lengths).last_hidden_state
    assert torch.allclose(before[:, :50], after[:, :50], atol=1e-5)
    assert not torch.allclose(before[:, 50:], after[:, 50:])


def test_prediction_at_t_never_sees_the_target_frame():
    """The objective's prediction for frame t + n is made from frames <= t only."""
    torch.manual_seed(0)
    encoder = speechssl.encoders.build_encoder("tpc_tiny").eval()
    model = PredictiveCodingModel(
        encoder, encoder.config.n_mels, PredictiveCodingConfig(shifts=[3])
    ).eval()
    feats = torch.randn(1, 40, encoder.config.n_mels)
    lengths = torch.tensor([40])
    hidden = encoder.forward_features(feats, lengths).last_hidden_state
    prediction = model.predictors["3"](hidden)[:, 10]  # predicts frame 13
    future = feats.clone()
    future[:, 11:] = 0.0  # frames 11.. (including the target 13) are hidden from t = 10
    hidden_future = encoder.forward_features(future, lengths).last_hidden_state
    assert torch.allclose(prediction, model.predictors["3"](hidden_future)[:, 10], atol=1e-5)


@pytest.mark.slow  # a whole-recipe run
def test_rerun_after_pretraining_reports_the_same_pretraining_fields(tiny_run):
    """A rerun once pre-training has finished (say, killed in the emotion stage) resumes at
    the last step and reports the pre-training's loss and validation metrics as they were,
    not ``train_loss: NaN`` without metrics (issue 15)."""
    import importlib.util

    from speechssl.config import compose

    run_dir, _ = tiny_run
    recorded = json.loads((run_dir / "results.json").read_text())["pretrain"]
    spec = importlib.util.spec_from_file_location("tpc_recipe", REPO / "recipes/tpc/run.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    cfg = compose("tpc", ["debug=tiny", f"run_dir={run_dir}"])
    checkpoint, result = recipe.pretrain(cfg, run_dir)
    assert str(checkpoint) == recorded["checkpoint"]
    assert math.isfinite(result["train_loss"]) and "valid/loss" in result
    assert {**result, "checkpoint": str(checkpoint)} == recorded


@pytest.mark.slow  # a whole-recipe run
def test_each_pretrain_seed_is_its_own_run_from_its_own_init(tiny_run):
    """``pretrain_seeds``: ``pretrain(cfg, run_dir, seed)`` trains under
    ``run_dir/pretrain/seed_<k>`` from the seed's init (not the default run's weights);
    ``transfer_upstreams`` then gives pre-trained run k to downstream seed k."""
    import importlib.util

    from speechssl.config import compose
    from speechssl.tasks.suite import transfer_upstreams
    from speechssl.typed import to_plain

    run_dir, _ = tiny_run
    spec = importlib.util.spec_from_file_location("tpc_recipe", REPO / "recipes/tpc/run.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    cfg = compose("tpc", ["debug=tiny", f"run_dir={run_dir}", "pretrain_seeds=[0,1]"])
    default = json.loads((run_dir / "results.json").read_text())["pretrain"]["checkpoint"]
    checkpoint, result = recipe.pretrain(cfg, run_dir, seed=1)
    assert Path(checkpoint).is_relative_to(run_dir / "pretrain" / "seed_1")
    assert math.isfinite(result["train_loss"])
    first = torch.load(default, weights_only=True)["model"]
    second = torch.load(checkpoint, weights_only=True)["model"]
    assert any(not torch.equal(first[key], second[key]) for key in first)
    upstreams = transfer_upstreams(
        ["pretrained_frozen"],
        to_plain(cfg.encoder),
        {"pretrained": [Path(default), Path(checkpoint)]},
        [0, 1],
        deterministic_head=True,
    )
    assert [upstream.seeds for upstream in upstreams] == [[0, 1]]
