"""Poisoned checkpoints at every door that opens one: ``speechssl.load_encoder``,
``speechssl export``, ``speechssl predict``, a Hugging Face folder, and resuming a run.

Nothing in a file ever runs; a refused file is one line naming it and what was found,
never the advice to load with ``weights_only=False``; resuming falls back past every
unusable checkpoint to the newest good one and ends where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from conftest import POISON_KINDS, assert_one_line_error, snapshot, write_poison

import speechssl
from speechssl.data.loaders import DataConfig
from speechssl.encoders import build_encoder
from speechssl.errors import MAX_LINE
from speechssl.heads import ClassifierHeadConfig, FbankUpstream, build_transfer_model
from speechssl.tasks.classification import TrainedClassifier
from speechssl.tasks.predict import write_model_file
from speechssl.testing import write_tone
from speechssl.train import Trainer, TrainerConfig
from speechssl.train.checkpoint import list_checkpoints


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """A training checkpoint of a tiny encoder, as a Trainer writes it."""
    folder = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    encoder = build_encoder("tpc_tiny")
    state = {
        "model": {f"encoder.{key}": value for key, value in encoder.state_dict().items()},
        "step": 1,
        "encoder_spec": {**encoder.spec(), "prefix": "encoder."},
    }
    torch.save(state, folder / "step_00000001.pt")
    return folder / "step_00000001.pt"


def _assert_one_line_exception(error: BaseException) -> None:
    text = str(error)
    assert "\n" not in text and len(text) < MAX_LINE, text
    assert "weights_only=False" not in text


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_load_encoder_refuses_in_one_line(tmp_path, good_checkpoint, kind):
    path = write_poison(tmp_path / "model.pt", kind, good_checkpoint)
    with pytest.raises((ValueError, OSError)) as caught:
        speechssl.load_encoder(path)
    _assert_one_line_exception(caught.value)
    assert str(path) in str(caught.value)
    assert not (tmp_path / "executed").exists()


@pytest.mark.parametrize("kind", ["text", "crafted-pickle", "random-bytes", "wrong-shapes"])
def test_export_refuses_in_one_line_and_writes_nothing(cli, tmp_path, good_checkpoint, kind):
    path = write_poison(tmp_path / "model.pt", kind, good_checkpoint)
    out = tmp_path / "export"
    code, _, stderr = cli("export", path, out)
    assert_one_line_error(code, stderr, "speechssl export: error: ")
    assert not out.exists() and not (tmp_path / "executed").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda spec: "not json",
        lambda spec: json.dumps([spec]),
        lambda spec: json.dumps({**spec, "config": {**spec["config"], "embed_dim": "wide"}}),
        lambda spec: json.dumps({**spec, "config": {**spec["config"], "no_such_option": 1}}),
        lambda spec: json.dumps({**spec, "config": {**spec["config"], "embed_dim": -64}}),
        lambda spec: json.dumps({**spec, "config": ["a", "list"]}),
        lambda spec: json.dumps({**spec, "family": "no_such_family"}),
    ],
    ids=["not-json", "a-list", "bad-type", "unknown-key", "negative", "config-list", "family"],
)
def test_export_with_a_damaged_config_json_is_one_line(cli, tmp_path, good_checkpoint, damage):
    exported = tmp_path / "export"
    assert cli("export", good_checkpoint, exported)[0] == 0
    spec = json.loads((exported / "config.json").read_text())
    (exported / "config.json").write_text(damage(spec))
    code, _, stderr = cli("export", exported, tmp_path / "again")
    assert_one_line_error(code, stderr, "speechssl export: error: ")
    assert not (tmp_path / "again").exists()


@pytest.fixture
def finetuned_run(tmp_path):
    """A run folder as recipes/finetune leaves it (model.json + train/checkpoints/best.pt)."""
    torch.manual_seed(0)
    head = ClassifierHeadConfig(projector_dim=8)
    model = build_transfer_model(head, FbankUpstream(n_mels=24), num_classes=2).eval()
    checkpoints = tmp_path / "train" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "step": 1}, checkpoints / "best.pt")
    trained = TrainedClassifier(model, tmp_path / "train", 0.5, {}, checkpoints / "best.pt")
    write_model_file(
        tmp_path,
        trained,
        upstream="fbank",
        upstream_kind="fbank",
        head=head,
        labels=["a", "b"],
        data=DataConfig(max_batch_seconds=4.0, num_workers=0),
    )
    return tmp_path, str(write_tone(tmp_path / "x.wav", 0.3))


@pytest.mark.parametrize("kind", ["text", "crafted-pickle", "truncated", "wrong-shapes", "a-list"])
def test_predict_with_a_poisoned_checkpoint_is_one_line(cli, finetuned_run, kind):
    run_dir, audio = finetuned_run
    best = run_dir / "train" / "checkpoints" / "best.pt"
    good = run_dir / "good.pt"
    shutil.copy(best, good)
    write_poison(best, kind, good)
    code, stdout, stderr = cli("predict", run_dir, audio)
    assert_one_line_error(code, stderr, "speechssl predict: error: ")
    assert stdout == "" and not (best.parent / "executed").exists()


@pytest.mark.parametrize(
    "edit",
    [
        lambda info: "{ broken",
        lambda info: json.dumps([info]),
        lambda info: json.dumps({**info, "labels": "a,b"}),
        lambda info: json.dumps({**info, "head": {**info["head"], "projector_dim": "big"}}),
        lambda info: json.dumps({**info, "head": {**info["head"], "no_such_key": 1}}),
        lambda info: json.dumps({**info, "encoder_spec": {"family": "fbank", "config": {"x": 1}}}),
        lambda info: json.dumps({**info, "checkpoint": 42}),
    ],
    ids=["not-json", "a-list", "labels-str", "bad-type", "unknown-key", "bad-spec", "bad-path"],
)
def test_predict_with_a_damaged_model_json_is_one_line(cli, finetuned_run, edit):
    run_dir, audio = finetuned_run
    info = json.loads((run_dir / "model.json").read_text())
    (run_dir / "model.json").write_text(edit(info))
    code, _, stderr = cli("predict", run_dir, audio)
    assert_one_line_error(code, stderr, "model.json")


@pytest.mark.parametrize("device", ["tpu", "cuda:7", "no-such-device"])
def test_predict_on_a_device_this_machine_lacks_is_one_line(cli, finetuned_run, device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    run_dir, audio = finetuned_run
    code, _, stderr = cli("predict", run_dir, audio, "--device", device)
    assert_one_line_error(code, stderr, f"--device {device}")


@pytest.fixture(scope="module")
def huggingface_folder(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf")
    config = transformers.HubertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    transformers.HubertModel(config).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize(
    "damage",
    ["missing-key", "wrong-type", "truncated-safetensors", "poisoned-bin", "wrong-shapes"],
)
def test_damaged_huggingface_folder_is_one_line(tmp_path, huggingface_folder, damage):
    from speechssl.encoders.wav2vec2 import convert as interop

    folder = tmp_path / "hf"
    shutil.copytree(huggingface_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    if damage == "missing-key":
        del config["model_type"]
    elif damage == "wrong-type":
        config["hidden_size"] = "wide"
    elif damage == "wrong-shapes":
        config["intermediate_size"] = 48
    (folder / "config.json").write_text(json.dumps(config))
    weights = folder / "model.safetensors"
    if damage == "truncated-safetensors":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "poisoned-bin":
        weights.unlink()
        write_poison(folder / "pytorch_model.bin", "crafted-pickle")
    with pytest.raises(ValueError) as caught:
        interop.from_huggingface(folder)
    _assert_one_line_exception(caught.value)
    assert not (folder / "executed").exists()


# ---------------------------------------------------------------------------------------
# resuming


class _Regression(torch.nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.linear = torch.nn.Linear(width, 1)
        self.dropout = torch.nn.Dropout(0.2)  # draws from the RNG: resume must restore it

    def forward(self, batch):
        x, y = batch
        prediction = self.linear(self.dropout(x)).squeeze(-1)
        return torch.nn.functional.mse_loss(prediction, y), {"mean": prediction.mean()}


_GENERATOR = torch.Generator().manual_seed(0)
_BATCHES = [(torch.randn(8, 3, generator=_GENERATOR), torch.randn(8, generator=_GENERATOR))] * 3


def _fit(run_dir, max_steps: int = 4, model=None) -> dict:
    torch.manual_seed(0)
    trainer = Trainer(
        model or _Regression(),
        _BATCHES,
        _BATCHES[:1],
        trainer_cfg=TrainerConfig(
            max_steps=max_steps,
            checkpoint_every=1,
            keep_last=0,
            eval_every=2,
            log_every=2,
            tensorboard=False,
            device="cpu",
        ),
        run_dir=run_dir,
        show_progress=False,
    )
    result = trainer.fit()
    result["weights"] = trainer.model.linear.weight.detach().clone()
    return result


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    return run_dir, _fit(run_dir)


def _same(result: dict, expected: dict) -> None:
    assert torch.equal(result.pop("weights"), expected["weights"])
    assert result == {key: value for key, value in expected.items() if key != "weights"}


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_resume_falls_back_past_an_unusable_checkpoint(tmp_path, uninterrupted, kind):
    source, expected = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    newest = list_checkpoints(run_dir / "checkpoints")[-1]
    good = tmp_path / "good.pt"
    shutil.copy(newest, good)
    write_poison(newest, kind, good)
    with pytest.warns(UserWarning, match=f"skipping checkpoint.*{newest.name}") as caught:
        result = _fit(run_dir)
    _same(result, expected)
    assert all(len(str(warning.message)) < MAX_LINE for warning in caught)
    assert not (newest.parent / "executed").exists()


def test_resume_skips_several_bad_checkpoints_and_names_each(tmp_path, uninterrupted):
    source, expected = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    write_poison(checkpoints[-1], "text")
    write_poison(checkpoints[-2], "crafted-pickle")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _fit(run_dir)
    skipped = " ".join(str(warning.message) for warning in caught)
    assert checkpoints[-1].name in skipped and "a text file" in skipped
    assert checkpoints[-2].name in skipped and "refused" in skipped
    _same(result, expected)


def test_resume_into_checkpoints_of_another_model_stops_and_keeps_them(tmp_path, uninterrupted):
    source, _ = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    before = snapshot(run_dir / "checkpoints")
    # every checkpoint holds a width-3 model; a width-5 model can use none of them, and
    # starting over would overwrite them
    trainer = Trainer(
        _Regression(width=5),
        [(torch.randn(8, 5), torch.randn(8))],
        trainer_cfg=TrainerConfig(max_steps=1, tensorboard=False, device="cpu"),
        run_dir=run_dir,
        show_progress=False,
    )
    with pytest.warns(UserWarning, match="do not fit"), pytest.raises(ValueError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "another model" in message and len(message) < MAX_LINE and "\n" not in message
    assert snapshot(run_dir / "checkpoints") == before


def test_rerun_of_a_finished_run_returns_the_same_result(tmp_path, uninterrupted):
    """A recipe rerun after pre-training finished (e.g. killed downstream) must report the
    pre-training's loss and validation metrics, not NaN and nothing."""
    source, expected = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    result = _fit(run_dir)
    assert result["train_loss"] == result["train_loss"]  # not NaN
    assert "valid/loss" in result
    _same(result, expected)


def test_orphaned_temporary_files_are_removed_at_start(tmp_path, uninterrupted, caplog):
    source, _ = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    orphan = run_dir / "checkpoints" / ".step_00000009.pt.tmp4194304"
    orphan.write_bytes(b"half a checkpoint")
    with caplog.at_level("INFO"):
        _fit(run_dir)
    assert not orphan.exists()
    assert ".step_00000009.pt.tmp4194304" in caplog.text


def test_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last_one(
    tmp_path, monkeypatch
):
    import shutil as shutil_module

    from speechssl import safe_io
    from speechssl.errors import one_line

    run_dir = tmp_path / "run"
    _fit(run_dir, max_steps=1)
    before = snapshot(run_dir / "checkpoints")

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 320 vs 256")

    monkeypatch.setattr(safe_io.torch, "save", full_disk)
    monkeypatch.setattr(
        safe_io.shutil, "disk_usage", lambda path: shutil_module._ntuple_diskusage(1, 1, 0)
    )
    with pytest.raises(OSError) as caught:
        _fit(run_dir, max_steps=2)
    assert one_line(caught.value) == f"disk full at {run_dir / 'checkpoints' / 'step_00000002.pt'}"
    assert snapshot(run_dir / "checkpoints") == before  # no temporary file, step 1 intact
