"""No stale answer and no NaN scored as a result (issue 24): prepared corpora and HuBERT
targets follow their audio, an all-NaN upstream is one line instead of "50.0 %", an
allocation no machine holds is one line naming its size before any data work, and the
recipes' own options are refused at the door (tests/recipes/test_bad_sources.py: before
Hydra starts and creates ``run_dir``)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from conftest import assert_one_line_error

import speechssl
from speechssl.data.loaders import prepare_once
from speechssl.data.manifest import read_jsonl, write_jsonl
from speechssl.errors import exit_on_bad_input
from speechssl.loading import save_encoder
from speechssl.targets import TargetConfig, mfcc_targets
from speechssl.testing import make_folder_tree, write_labelled_csv, write_tone


def _noise_over(path, seed: int = 0) -> None:
    """Replace a clip by white noise of the same length and format."""
    wav, rate = soundfile.read(path)
    noise = np.random.default_rng(seed).uniform(-0.5, 0.5, wav.shape)
    soundfile.write(path, noise, rate, subtype=soundfile.info(path).subtype)


# ---------------------------------------------------------------------------------------
# stale caches


def test_prepare_once_notices_removed_and_replaced_audio(tmp_path, capsys):
    src = make_folder_tree(tmp_path / "corpus", files_per_label=3)
    out = tmp_path / "prepared"
    first = prepare_once("folder", src, out)
    assert prepare_once("folder", src, out) == first
    assert capsys.readouterr().err == ""  # unchanged: reused without a word
    (src / "no" / "no_0.wav").unlink()
    _noise_over(src / "yes" / "yes_1.wav")
    prepare_once("folder", src, out)
    notice = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(notice) == 1 and "changed since it was prepared" in notice[0], notice
    audio = {row["audio"] for row in read_jsonl(out / "all.jsonl")}
    assert str(src / "no" / "no_0.wav") not in audio and len(audio) == 5


def test_hubert_targets_follow_audio_replaced_under_the_same_manifest(tmp_path):
    rows = [
        {
            "id": f"u{index}",
            "audio": str(write_tone(tmp_path / f"u{index}.wav", 0.5, 16000, 200 + 300 * index)),
            "duration": 0.5,
            "sample_rate": 16000,
        }
        for index in range(4)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "valid.jsonl", rows[:1])
    manifests = (tmp_path / "train.jsonl", tmp_path / "valid.jsonl")
    config = TargetConfig(mfcc_clusters=4)
    before = mfcc_targets(manifests, tmp_path / "labels", config, report=None)
    manifest_bytes = (tmp_path / "train.jsonl").read_bytes()
    for index in range(4):
        _noise_over(rows[index]["audio"], seed=index)
    assert (tmp_path / "train.jsonl").read_bytes() == manifest_bytes  # the same manifest
    after = mfcc_targets(manifests, tmp_path / "labels", config, report=None)
    fresh = mfcc_targets(manifests, tmp_path / "fresh_labels", config, report=None)
    assert after.kmeans.fingerprint == fresh.kmeans.fingerprint != before.kmeans.fingerprint
    for stale, new in zip(after.train.labels, fresh.train.labels):
        np.testing.assert_array_equal(stale, new)


# ---------------------------------------------------------------------------------------
# results checked before they are reported


@pytest.fixture
def nan_upstream(tmp_path):
    """An export whose every weight is NaN (a diverged run exported as it was)."""
    encoder = speechssl.load_encoder("fbank_transformer_tiny")
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.fill_(float("nan"))
    return save_encoder(encoder, tmp_path / "nan_export")


def test_an_all_nan_upstream_is_one_line_not_a_chance_score(cli, tmp_path, nan_upstream):
    sets = {}
    for name, count in (("train", 3), ("valid", 2), ("test", 2)):
        rows = [
            (str(write_tone(tmp_path / name / f"{label}{i}.wav", 0.5, frequency=hz)), label)
            for label, hz in (("low", 300.0), ("high", 2500.0))
            for i in range(count)
        ]
        sets[name] = write_labelled_csv(tmp_path / f"{name}.csv", rows)
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        "evaluate", nan_upstream, "--task", "classify", "--data", sets["train"],
        "--valid", sets["valid"], "--test", sets["test"], "--out", out,
    )  # fmt: skip
    line = assert_one_line_error(code, stderr, "NaN or inf")
    assert "nan_export" in line and "classification" in line
    assert "%" not in stdout and not (out / "results.json").exists()


def test_an_allocation_failure_is_one_line_naming_the_size(capsys):
    with pytest.raises(SystemExit) as stop:
        exit_on_bad_input("speechssl evaluate", torch.empty, 10**13)  # 40 TB of float32
    assert stop.value.code == 1
    assert_one_line_error(1, capsys.readouterr().err, "an allocation of 40.0 TB was asked for")


def test_a_huge_encoder_is_refused_before_any_data_preparation(recipe, tmp_path):
    run_dir = tmp_path / "run"
    code, stderr = recipe("tpc", "encoder.embed_dim=1000000000", f"run_dir={run_dir}")
    assert_one_line_error(code, stderr, "of memory; this machine has")
    assert not run_dir.exists()


# ---------------------------------------------------------------------------------------
# checks at the door


@pytest.mark.parametrize(
    "name, override, expect",
    [
        ("tpc", "seeds=[]", "seeds=[]: give at least one seed"),
        ("tpc", "pretrain_seeds=[]", "pretrain_seeds=[]"),
        ("tpc", "seeds=[0,0]", "a seed is repeated"),
        ("tpc", "emotion.modes=[bogus]", "emotion.modes: unknown mode 'bogus'"),
        ("tpc", "emotion.modes=[]", "emotion.modes=[]"),
        ("tpc", "emotion.labels=[ang,ang,neu,sad]", "ang named twice"),
        ("tpc", "emotion.validation=bogus", "emotion.validation='bogus'"),
        ("tpc", "pretrain.sources=[]", "pretrain.sources=[]"),
        ("hubert_sat", "seeds=[]", "seeds=[]"),
        ("hubert_sat", "modes=[fbank,bogus]", "modes: unknown mode 'bogus'"),
        ("hubert_sat", "emotion.src=/no/such/folder", "emotion.src: folder not found"),
    ],
)
def test_recipe_options_are_refused_before_pre_training(recipe, tmp_path, name, override, expect):
    run_dir = tmp_path / "run"
    code, stderr = recipe(name, override, f"run_dir={run_dir}")
    assert_one_line_error(code, stderr, expect)
    assert not run_dir.exists()  # nothing prepared, trained or created
