"""Every file reader is bounded and every input is converted or refused the same way
(issue 24): deep or huge JSON, hand-edited ``model.json`` sections, repeated labels, a
torchaudio file with a bad ``preset``, waveforms as soundfile gives them, the ONNX
classifier's inputs, and Ctrl-C while the console script is still importing torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tomllib
import torch
from conftest import REPO, assert_one_line_error
from test_checkpoints import finetuned_run  # noqa: F401 - the fixture, shared

import speechssl
from speechssl.data.prepare.common import check_audio
from speechssl.encoders import PRESETS
from speechssl.encoders.wav2vec2.convert import to_torchaudio
from speechssl.loading import save_encoder
from speechssl.safe_io import parse_json
from speechssl.tasks.export import check_classifier_inputs
from speechssl.testing import write_tone

# torchaudio.models.hubert_base()'s wav2vec2_model arguments
HUBERT_BASE = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": None,
    "extractor_conv_bias": False,
    "encoder_embed_dim": 768,
    "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 128,
    "encoder_pos_conv_groups": 16,
    "encoder_num_layers": 12,
    "encoder_num_heads": 12,
    "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_features": 3072,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.1,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.05,
}
DEEP = "[" * 100_000 + "]" * 100_000  # Python's parser recurses about 1,000 levels at most


# ---------------------------------------------------------------------------------------
# bounded JSON


def test_deep_json_is_refused_in_one_line_never_a_recursion_error():
    for text in (DEEP, '{"a":' * 100 + "1" + "}" * 100):
        with pytest.raises(ValueError, match="nested deeper than"):
            parse_json(text, "config.json")


def test_export_folder_with_a_deeply_nested_config_json_is_one_line(cli, tmp_path):
    folder = save_encoder(speechssl.load_encoder("hubert_tiny"), tmp_path / "export")
    (folder / "config.json").write_text(DEEP)
    code, _, stderr = cli("export", folder, tmp_path / "again")
    assert_one_line_error(code, stderr, "nested deeper than")


def test_predict_with_a_deeply_nested_model_json_is_one_line(cli, finetuned_run):  # noqa: F811
    run_dir, audio = finetuned_run
    (run_dir / "model.json").write_text(DEEP)
    code, _, stderr = cli("predict", run_dir, audio)
    assert_one_line_error(code, stderr, "nested deeper than")


@pytest.mark.parametrize(
    "data",
    [{"max_batch_seconds": "lots"}, {"no_such_option": 1}],
    ids=["a-string-value", "unknown-key"],
)
def test_model_json_data_section_is_checked_before_use(cli, finetuned_run, data):  # noqa: F811
    run_dir, audio = finetuned_run
    info = json.loads((run_dir / "model.json").read_text())
    (run_dir / "model.json").write_text(json.dumps({**info, "data": {**info["data"], **data}}))
    code, stdout, stderr = cli("predict", run_dir, audio)
    assert stdout == ""
    assert_one_line_error(code, stderr, "'data' is not a data config")


def test_repeated_labels_are_refused_not_printed_under_the_wrong_name(cli, finetuned_run):  # noqa: F811
    run_dir, audio = finetuned_run
    info = json.loads((run_dir / "model.json").read_text())
    (run_dir / "model.json").write_text(json.dumps({**info, "labels": ["a", "a"]}))
    code, stdout, stderr = cli("predict", run_dir, audio)
    assert stdout == ""
    assert_one_line_error(code, stderr, "names a class twice (a)")


@pytest.mark.parametrize(
    "preset, expect",
    [
        ({"no_such_argument": 1}, "TypeError"),
        ({"encoder_embed_dim": "wide"}, "not a usable wav2vec2_model"),
        ({**HUBERT_BASE, "encoder_ff_interm_features": 10**10}, "of memory"),
    ],
    ids=["unknown-argument", "a-string", "too-large"],
)
def test_torchaudio_file_with_a_bad_preset_dict_is_one_line(cli, tmp_path, preset, expect):
    encoder = speechssl.load_encoder("hubert_tiny")
    path = tmp_path / "torchaudio.pt"
    torch.save({"state_dict": to_torchaudio(encoder).state_dict(), "preset": preset}, path)
    code, _, stderr = cli("export", path, tmp_path / "out")
    assert_one_line_error(code, stderr, expect)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# what soundfile gives, the same for every encoder


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n.endswith("_tiny")) + ["fbank"])
def test_every_encoder_converts_float64_int16_and_list_lengths_alike(name):
    encoder = speechssl.load_encoder(name)
    generator = torch.Generator().manual_seed(0)
    pcm = (torch.randn(2, 6400, generator=generator) * 3000).to(torch.int16)
    reference = encoder(pcm.float() / 32768, torch.tensor([6400, 4800]))
    for wav, lengths in (
        (pcm, [6400, 4800]),  # int16 PCM, lengths as a list
        ((pcm.double() / 32768).numpy(), (6400, 4800)),  # soundfile.read's default: float64
        (pcm.double() / 32768, np.array([6400, 4800])),
    ):
        output = encoder(wav, lengths)
        assert output.last_hidden_state.dtype == torch.float32
        torch.testing.assert_close(output.last_hidden_state, reference.last_hidden_state)
        assert output.lengths.tolist() == reference.lengths.tolist()
    with pytest.raises(ValueError, match="is not audio"):
        encoder(pcm.to(torch.int8), [6400, 4800])
    with pytest.raises(ValueError, match=r"wav\[None\]"):
        encoder(pcm[0].float(), None)


# ---------------------------------------------------------------------------------------
# the ONNX classifier and predict refuse the same inputs


def test_onnx_inputs_outside_one_clip_are_refused():
    # what OnnxClassifier checks before the graph runs (tests/unit/tasks/test_onnx_classifier.py
    # runs an exported classifier through it)
    wav = np.zeros((2, 4000), np.float32)
    for lengths in ([5000, 3000], [0, 3000], [-4, 3000], [100, 3000]):
        with pytest.raises(ValueError, match=r"lengths must lie in \[1600, 4000\]"):
            check_classifier_inputs(wav, lengths)
    with pytest.raises(ValueError, match="one per clip"):
        check_classifier_inputs(wav, [4000])
    with pytest.raises(ValueError, match="one per clip"):
        check_classifier_inputs(wav, [4000.0, 3000.0])
    converted, _ = check_classifier_inputs(np.full((2, 4000), 16384, np.int16), [4000, 3000])
    assert converted.dtype == np.float32 and converted[0, 0] == 0.5


def test_predict_and_onnx_agree_on_the_shortest_clip(tmp_path):
    # predict reads files through check_audio; the ONNX wrapper reads arrays
    for samples, refused in ((1599, True), (1600, False)):
        path = write_tone(tmp_path / f"{samples}.wav", samples / 16000, 16000)
        assert (check_audio(str(path)).reason == "too-short") is refused
        wav = np.zeros((1, samples), np.float32)
        if refused:
            with pytest.raises(ValueError, match="at least 100 ms"):
                check_classifier_inputs(wav, [samples])
        else:
            check_classifier_inputs(wav, [samples])


# ---------------------------------------------------------------------------------------
# Ctrl-C at any moment


def test_console_script_is_the_light_entry_module():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["speechssl"] == "speechssl.entry:main"
    completed = subprocess.run(
        [sys.executable, "-c", "import sys, speechssl.entry; print('torch' in sys.modules)"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert completed.stdout.strip() == "False", completed.stderr


def test_ctrl_c_while_torch_imports_is_one_line_and_exit_130():
    program = (
        "import sys; print('started', flush=True); from speechssl.entry import main; "
        "sys.exit(main(['--help']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout.readline().strip() == "started"
    time.sleep(0.2)  # inside main, importing speechssl.cli (torch takes seconds)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip() == "speechssl: interrupted"
