"""recipes/finetune with public upstream formats, end to end: ``upstream=<file or folder>``
for a torchaudio ``Wav2Vec2Model`` state dict, a fairseq HuBERT checkpoint, a Hugging
Face ``HubertModel`` directory and a unilm WavLM checkpoint, each built offline at random
init and small, saved the way users get them. Every run learns three tones well above chance (1/3), records the upstream
kind, and really uses the file's weights (kept in frozen mode, trained in finetune mode).
Bad upstreams end with exit code 1 and one stderr line.

The recipe's Hydra entry point runs in this process (as tests/recipes/test_finetune.py
does for its bad-data cases): a subprocess per run would cost seconds of imports.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import torchaudio
from omegaconf import OmegaConf

from speechssl.encoders.wav2vec2.convert import (
    FAIRSEQ_KEY_MAP,
    from_torchaudio,
    match_torchaudio_preset,
)
from speechssl.encoders.wavlm import convert as wavlm_convert
from speechssl.tasks.predict import load_run
from speechssl.tasks.user_data import load_upstream
from speechssl.testing import write_labelled_csv, write_tone

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "finetune" / "run.py"
FREQUENCIES = {"low": 250.0, "mid": 1000.0, "high": 3500.0}
# one full batch per step (num_buckets=1, the whole train set fits in 24 s) for a smooth,
# quick descent; 30 steps at lr 2e-2. Measured test accuracy (12 tones): torchaudio frozen
# 0.92, fairseq finetune 0.92, Hugging Face frozen 1.00 and finetune 1.00; chance is 1/3
RUN = [
    "debug=tiny",
    "head=mean_pool",  # SUPERB's trained head, frozen or fine-tuned
    "transfer.epochs=30",
    "transfer.lr=2e-2",
    "head.projector_dim=32",
    "data.num_buckets=1",
    "data.verify_audio=false",
    "trainer.threads=1",
    "trainer.tensorboard=false",
]

# a HuBERT Base-shaped architecture (group-norm extractor, post-LN), narrow and shallow;
# torchaudio.models.wav2vec2_model keyword arguments
TINY_CONV = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
TINY_TORCHAUDIO = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": TINY_CONV,
    "extractor_conv_bias": False,
    "encoder_embed_dim": 64,
    "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 2,
    "encoder_num_heads": 4,
    "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_features": 128,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.1,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.05,
    "aux_num_out": None,
}


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    """``trainer.threads=1`` sets torch's thread count for the process: give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """``train.csv`` (8 tones per class), ``valid.csv`` and ``test.csv`` (4 per class),
    absolute paths: a dev set of one tone per class (10 % of train) would choose the
    checkpoint of every run by chance."""
    root = tmp_path_factory.mktemp("tones")
    sets = {}
    for name, count in (("train", 8), ("valid", 4), ("test", 4)):
        rows = []
        for label, frequency in FREQUENCIES.items():
            for index in range(count):
                path = root / name / f"{label}_{index}.wav"
                write_tone(path, 0.4 + 0.2 * (index % 2), frequency=frequency * (1 + 0.03 * index))
                rows.append((str(path), label))
        sets[name] = write_labelled_csv(root / f"{name}.csv", rows)
    return sets


def _fairseq_key(ours: str) -> str:
    """fairseq's name for one of our parameters: FAIRSEQ_KEY_MAP read backwards."""
    for pattern, template in FAIRSEQ_KEY_MAP:
        regex = "^" + re.escape(template).replace(r"\{\}", r"([A-Za-z_0-9]+)") + "$"
        match = re.fullmatch(regex, ours)
        if match:
            candidate = re.sub(r"\([^)]*\)", "{}", pattern).replace("\\.", ".")
            candidate = candidate.format(*match.groups())
            if re.fullmatch(pattern, candidate):
                return candidate
    raise KeyError(ours)


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory):
    """Random-init upstreams saved as users get them, by kind."""
    import transformers

    root = tmp_path_factory.mktemp("upstreams")
    torch.manual_seed(0)
    reference = torchaudio.models.wav2vec2_model(**TINY_TORCHAUDIO)
    # a non-standard architecture travels with its builder arguments (a bare state dict of
    # a standard one, e.g. hubert_base, is recognised by its shapes instead)
    torch.save(
        {"state_dict": reference.state_dict(), "preset": TINY_TORCHAUDIO}, root / "torchaudio.pt"
    )
    torch.save(reference.state_dict(), root / "bare_state_dict.pt")

    # fairseq HuBERT: weights under "model", the config as omegaconf nodes under "cfg",
    # plus the pre-training projection and trainer state that fairseq also writes
    torch.manual_seed(1)
    other = torchaudio.models.wav2vec2_model(**TINY_TORCHAUDIO)
    state = {_fairseq_key(key): value for key, value in from_torchaudio(other).state_dict().items()}
    state["final_proj.weight"] = torch.randn(16, 64)
    model_config = {
        "_name": "hubert",
        "extractor_mode": "default",
        "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
        "conv_bias": False,
        "encoder_embed_dim": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 4,
        "encoder_ffn_embed_dim": 128,
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "layer_norm_first": False,
    }
    cfg = OmegaConf.create({"model": model_config, "task": {"_name": "hubert_pretraining"}})
    torch.save(
        {"cfg": cfg, "model": state, "optimizer_history": [], "extra_state": {}},
        root / "hubert_fairseq.pt",
    )

    torch.manual_seed(2)
    config = transformers.HubertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=[32] * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    transformers.HubertModel(config).save_pretrained(str(root / "hubert_hf"))

    # a unilm WavLM checkpoint as Microsoft ships WavLM-Base+.pt: {"cfg": {...}, "model": ...}
    torch.manual_seed(3)
    wavlm = torchaudio.models.wavlm_model(
        **{**TINY_TORCHAUDIO, "encoder_num_buckets": 32, "encoder_max_distance": 100}
    )
    torch.save(
        wavlm_convert.to_unilm_checkpoint(wavlm_convert.from_torchaudio(wavlm)),
        root / "WavLM-Tiny.pt",
    )

    truncated = root / "truncated.pt"
    truncated.write_bytes((root / "hubert_fairseq.pt").read_bytes()[:4000])
    (root / "no_config").mkdir()
    (root / "no_config" / "model.safetensors").write_bytes(b"")
    return {
        "torchaudio": root / "torchaudio.pt",
        "fairseq": root / "hubert_fairseq.pt",
        "huggingface": root / "hubert_hf",
        "wavlm": root / "WavLM-Tiny.pt",
        "bare_state_dict": root / "bare_state_dict.pt",
        "truncated": truncated,
        "no_config": root / "no_config",
    }


@pytest.fixture(scope="module")
def recipe_main():
    spec = importlib.util.spec_from_file_location("finetune_recipe_upstreams", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run(recipe_main, overrides, monkeypatch) -> int:
    """The recipe as ``python run.py <overrides>`` runs it; returns the exit code."""
    monkeypatch.setattr(sys, "argv", [str(RECIPE), *overrides])
    try:
        recipe_main()
    except SystemExit as exit_info:
        return exit_info.code
    return 0


# the format each upstream file is recognised as (the WavLM file is unilm's)
EXPECTED_KIND = {"wavlm": "unilm"}


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("torchaudio", "frozen"),
        ("fairseq", "finetune"),
        ("huggingface", "frozen"),
        ("huggingface", "finetune"),
        ("wavlm", "frozen"),
        ("wavlm", "finetune"),
    ],
)
@pytest.mark.slow  # a whole-recipe run
def test_public_upstream_runs_the_recipe(
    kind, mode, tones, upstreams, recipe_main, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    overrides = [
        *RUN,
        f"data.train={tones['train']}",
        f"data.valid={tones['valid']}",
        f"data.test={tones['test']}",
        f"upstream={upstreams[kind]}",
        f"head.mode={mode}",
        f"run_dir={run_dir}",
    ]
    assert _run(recipe_main, overrides, monkeypatch) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["upstream_kind"] == EXPECTED_KIND.get(kind, kind)
    assert results["head_mode"] == mode
    assert results["upstream"] == str(upstreams[kind])
    assert results["eval_set"] == "test" and results["num_test"] == 12
    assert results["accuracy"] >= 0.75, results["accuracy"]  # chance is 1/3

    # the saved classifier carries the file's encoder: unchanged when frozen; trained when
    # fine-tuned, except the convolutional front end (freeze_feature_extractor)
    original, _ = load_upstream(str(upstreams[kind]))
    trained = load_run(run_dir).model.encoder.state_dict()
    for key, value in original.state_dict().items():
        same = torch.equal(value, trained[key])
        if mode == "frozen" or key.startswith("feature_extractor."):
            assert same or key == "mask_embedding", key  # torchaudio has none
    if mode == "finetune":
        assert not torch.equal(
            original.state_dict()["transformer.layers.0.attention.q_proj.weight"],
            trained["transformer.layers.0.attention.q_proj.weight"],
        )


@pytest.mark.slow  # a whole-recipe run
def test_fbank_upstream_in_finetune_mode_trains_the_head(tones, recipe_main, tmp_path, monkeypatch):
    """FBANK has no weights: finetune mode trains the head alone instead of failing on an
    optimiser group for an encoder with no parameters."""
    overrides = [
        *RUN,
        "fbank_n_mels=40",
        f"data.train={tones['train']}",
        f"data.valid={tones['valid']}",
        f"data.test={tones['test']}",
        "upstream=fbank",
        "head.mode=finetune",
        f"run_dir={tmp_path}",
    ]
    assert _run(recipe_main, overrides, monkeypatch) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["upstream_kind"] == "fbank" and results["head_mode"] == "finetune"
    assert results["accuracy"] >= 0.75, results["accuracy"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("truncated", "truncated or corrupt"),
        ("no_config", "no readable config.json"),
        ("bare_state_dict", "fit none of torchaudio's presets"),
        ("absent", "no such file or folder"),
    ],
)
def test_bad_upstream_is_one_line_and_exit_code_1(
    case, expected, tones, upstreams, recipe_main, tmp_path, monkeypatch, capfd
):
    upstream = upstreams.get(case, tmp_path / "absent.pt")
    overrides = [
        *RUN,
        f"data.train={tones['train']}",
        f"upstream={upstream}",
        f"run_dir={tmp_path}",
    ]
    capfd.readouterr()
    assert _run(recipe_main, overrides, monkeypatch) == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("finetune: error: upstream="), lines
    assert expected in lines[0], lines[0]


def test_standard_torchaudio_architectures_are_recognised_by_shape():
    """A bare state dict needs no preset name when its shapes match one; the Large
    variants differ only in extractor norms and conv biases."""
    for name in ("hubert_base", "hubert_large", "wav2vec2_large", "wav2vec2_large_lv60k"):
        with torch.device("meta"):
            state = getattr(torchaudio.models, name)().state_dict()
        assert match_torchaudio_preset(state) == name
    with torch.device("meta"):
        base = torchaudio.models.wav2vec2_base().state_dict()
    # same architecture as hubert_base (only dropout rates differ): the first match wins
    assert match_torchaudio_preset(base) == "hubert_base"
