"""The Trainer in one process: non-finite steps, accumulation, early stopping, resume, outputs."""

import json

import pytest
import torch
import yaml
from train_toy import NextFrameModel, make_loader

from speechssl.data.collate import collate
from speechssl.train import (
    NonFiniteLossError,
    Trainer,
    TrainerConfig,
    seed_everything,
)
from speechssl.train.checkpoint import list_checkpoints, load_checkpoint
from speechssl.train.config import OptimConfig
from speechssl.train.progress import read_metrics
from speechssl.typed import to_dataclass

OPTIM = OptimConfig(lr=3e-3, warmup_steps=1, schedule="constant", eps=1e-6)


def _trainer(model, loader, run_dir, valid=None, **overrides):
    config = {
        "device": "cpu",
        "log_every": 1,
        "tensorboard": False,
        "checkpoint_every": 100,
        **overrides,
    }
    return Trainer(
        model,
        loader,
        valid,
        trainer_cfg=to_dataclass(config, TrainerConfig),
        optim_cfg=OPTIM,
        run_dir=run_dir,
        show_progress=False,
    )


def _model(**kwargs):
    seed_everything(0)
    return NextFrameModel(**kwargs)


def _train_losses(run_dir):
    return {
        row["step"]: row.get("loss")
        for row in read_metrics(run_dir / "metrics.jsonl")
        if row["split"] == "train"
    }


def test_nan_loss_skips_the_update_is_counted_and_the_run_goes_on(corpus, tmp_path):
    model = _model(nan_at={2})  # the third step's loss is NaN
    result = _trainer(
        model, make_loader(corpus[0]), tmp_path, max_steps=5, checkpoint_every=1, keep_last=0
    ).fit()
    assert result["step"] == 5 and result["nonfinite_steps"] == 1
    before, at_nan, after = (
        load_checkpoint(tmp_path / f"checkpoints/step_{s:08d}.pt") for s in (2, 3, 4)
    )
    for name, value in before["model"].items():
        assert torch.equal(value, at_nan["model"][name]), f"{name} changed on the skipped step"
        assert not torch.equal(value, after["model"][name])
    assert at_nan["optimizer"]["state"][0]["step"] == before["optimizer"]["state"][0]["step"]
    losses = _train_losses(tmp_path)
    assert losses[3] is None and all(torch.isfinite(torch.tensor(losses[s])) for s in (1, 2, 4, 5))
    assert [row["nonfinite_steps"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [
        0,
        0,
        1,
        1,
        1,
    ]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_nonfinite_losses_in_a_row_stop_with_a_checkpoint(corpus, tmp_path):
    trainer = _trainer(
        _model(nan_at={1, 2, 3}),
        make_loader(corpus[0]),
        tmp_path,
        max_steps=10,
        max_consecutive_nonfinite=3,
    )
    with pytest.raises(
        NonFiniteLossError, match=r"step 4 \(3 non-finite losses in a row\).*step_00000004.pt"
    ):
        trainer.fit()
    assert (
        load_checkpoint(tmp_path / "checkpoints/step_00000004.pt")["trainer"]["nonfinite_total"]
        == 3
    )


def test_grad_accumulation_equals_the_full_batch(corpus, tmp_path):
    dataset = make_loader(corpus[0]).dataset
    items = [dataset[i] for i in range(4)]
    full = [collate(items)]
    halves = [collate(items[:2]), collate(items[2:])]
    one = _model()
    _trainer(one, full, tmp_path / "full", max_steps=3).fit()
    two = _model()
    _trainer(two, halves, tmp_path / "halves", max_steps=3, grad_accum=2).fit()
    for (name, a), b in zip(one.named_parameters(), two.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    losses_full, losses_halves = (
        _train_losses(tmp_path / "full"),
        _train_losses(tmp_path / "halves"),
    )
    assert losses_full == pytest.approx(losses_halves, abs=1e-6)


class _ScoredModel(NextFrameModel):
    """Its evaluation ``score`` rises by one at every evaluation: it never improves."""

    evaluations = 0

    def forward(self, batch):
        loss, metrics = super().forward(batch)
        if not self.training:
            metrics["score"] = float(self.evaluations)
            self.evaluations += 1
        return loss, metrics


def test_early_stopping_on_a_metric_keeps_the_best_checkpoint(corpus, tmp_path):
    loader = make_loader(corpus[0])
    valid = [collate([loader.dataset[0], loader.dataset[1]])]
    trainer = _trainer(
        _ScoredModel(),
        loader,
        tmp_path,
        valid=valid,
        max_steps=20,
        eval_every=1,
        early_stopping={"metric": "score", "mode": "min", "patience": 2},
    )
    result = trainer.fit()
    assert result["stop_reason"] == "early_stopping" and result["step"] == 3
    assert result["best_step"] == 1 and result["best_value"] == 0.0
    assert load_checkpoint(tmp_path / "checkpoints/best.pt")["step"] == 1
    valid_rows = [
        row for row in read_metrics(tmp_path / "metrics.jsonl") if row["split"] == "valid"
    ]
    assert [row["score"] for row in valid_rows] == [0.0, 1.0, 2.0]


def test_resume_auto_skips_a_truncated_checkpoint_and_continues_exactly(corpus, tmp_path):
    first = tmp_path / "first"
    _trainer(
        _model(dropout=0.2),
        make_loader(corpus[0]),
        first,
        max_steps=6,
        checkpoint_every=1,
        keep_last=0,
    ).fit()
    uninterrupted = _train_losses(first)
    # keep steps 1-4 and make the newest of those unreadable, as a crash while copying would
    checkpoints = list_checkpoints(first / "checkpoints")
    for path in checkpoints[4:]:
        path.unlink()
    checkpoints[3].write_bytes(checkpoints[3].read_bytes()[:1000])
    trainer = _trainer(
        _model(dropout=0.2),
        make_loader(corpus[0]),
        first,
        max_steps=6,
        checkpoint_every=1,
        keep_last=0,
    )
    with pytest.warns(UserWarning, match="skipping checkpoint.*step_00000004.pt.*truncated"):
        result = trainer.fit()
    assert result["step"] == 6
    rows = [row["step"] for row in read_metrics(first / "metrics.jsonl")]
    assert rows == [1, 2, 3, 4, 5, 6]  # steps 4-6 of the first run were replaced, not duplicated
    assert _train_losses(first) == uninterrupted  # resumed from step 3, bit for bit


def test_resume_skips_a_checkpoint_that_would_run_code(corpus, tmp_path):
    import os

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'executed'}",))

    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": {}, "step": 9, "x": RunsCode()}, tmp_path / "checkpoints/step_00000009.pt")
    trainer = _trainer(_model(), make_loader(corpus[0]), tmp_path, max_steps=2)
    # skipped with a warning naming it (nothing older: a fresh run), never executed
    with pytest.warns(UserWarning, match="step_00000009.pt: refused"):
        assert trainer.fit()["step"] == 2
    assert not (tmp_path / "executed").exists()


class _WithEncoder(NextFrameModel):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(2, 2)
        self.encoder.spec = lambda: {"family": "toy", "config": {"dim": 2}}


def test_run_directory_holds_config_checkpoints_metrics_tensorboard_and_plot(corpus, tmp_path):
    loader = make_loader(corpus[0])
    full_config = {
        "trainer": {"max_steps": 4},
        "data": {"name": "demo", "path": "${trainer.max_steps}"},
    }
    trainer = Trainer(
        _WithEncoder(),
        loader,
        [next(iter(loader))],
        trainer_cfg={"device": "cpu", "max_steps": 4, "log_every": 2, "eval_every": 2},
        optim_cfg=OPTIM,
        full_config=full_config,
        run_dir=tmp_path,
        show_progress=False,
    )
    result = trainer.fit()
    assert set(result) >= {"train_loss", "valid/loss", "valid/frames"}
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written == {"trainer": {"max_steps": 4}, "data": {"name": "demo", "path": 4}}  # resolved
    state = load_checkpoint(tmp_path / "checkpoints/step_00000004.pt")
    assert set(state) == {
        "format_version",
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "sampler",
        "rng",
        "step",
        "epoch",
        "config",
        "trainer",
        "encoder_spec",
    }
    assert state["config"] == written
    assert state["encoder_spec"] == {"family": "toy", "config": {"dim": 2}, "prefix": "encoder."}
    assert state["sampler"]["batches_consumed"] == 4 and state["sampler"]["epoch"] == 0
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train = [row for row in rows if row["split"] == "train"]
    assert [row["step"] for row in train] == [2, 4]
    # 2 utterances of 1 s per batch: seconds of audio per second equal utterances per second
    assert (
        train[0]["audio_s_per_s"] == pytest.approx(train[0]["utterances_per_s"])
        and train[0]["lr"] > 0
    )
    assert any(path.name.startswith("events.out.tfevents") for path in (tmp_path / "tb").iterdir())
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["split"] == "valid"


def test_bf16_autocast_trains_on_the_cpu(corpus, tmp_path):
    model = _model()
    before = model.predictor.weight.detach().clone()
    result = _trainer(model, make_loader(corpus[0]), tmp_path, max_steps=2, precision="bf16").fit()
    assert result["nonfinite_steps"] == 0 and torch.isfinite(torch.tensor(result["train_loss"]))
    assert model.predictor.weight.dtype == torch.float32  # autocast leaves the weights in fp32
    assert not torch.equal(before, model.predictor.weight)


def test_bad_configuration_fails_at_start(corpus, tmp_path):
    loader = make_loader(corpus[0])
    with pytest.raises(ValueError, match="Key 'max_step' not in 'TrainerConfig'"):
        Trainer(_model(), loader, trainer_cfg={"max_step": 3}, run_dir=tmp_path)
    with pytest.raises(ValueError, match="grad_accum"):
        Trainer(_model(), loader, trainer_cfg={"grad_accum": 0}, run_dir=tmp_path)


def test_resume_with_a_plain_dataloader_skips_the_batches_already_trained_on(corpus, tmp_path):
    # a sampler without state_dict: the trainer re-plans the remaining index lists itself
    dataset = make_loader(corpus[0]).dataset
    generator = torch.Generator().manual_seed(0)

    def loader():
        return torch.utils.data.DataLoader(
            dataset, batch_size=2, shuffle=True, generator=generator, collate_fn=collate
        )

    settings = {"max_steps": 6, "checkpoint_every": 1, "keep_last": 0}
    _trainer(_model(dropout=0.2), loader(), tmp_path / "full", **settings).fit()
    generator.manual_seed(0)
    _trainer(_model(dropout=0.2), loader(), tmp_path / "cut", **{**settings, "max_steps": 3}).fit()
    # the shuffle order is drawn from the loader's own generator: restart it as a fresh job would
    generator.manual_seed(0)
    _trainer(_model(dropout=0.2), loader(), tmp_path / "cut", **settings).fit()
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "full")


def test_unreadable_files_are_reported_in_skipped_jsonl_and_training_goes_on(corpus, tmp_path):
    gone = {
        "id": "gone",
        "audio": str(tmp_path / "gone.wav"),
        "duration": 1.0,
        "sample_rate": 16000,
    }
    loader = make_loader([*corpus[0][:4], gone])  # 3 batches: 2 + 2 + 1 utterances
    result = _trainer(_model(), loader, tmp_path, max_steps=0, max_epochs=1).fit()
    assert result["step"] == 3 and result["stop_reason"] == "max_epochs"
    records = [json.loads(line) for line in (tmp_path / "skipped.jsonl").read_text().splitlines()]
    assert [(record["path"], record["reason"]) for record in records] == [
        (gone["audio"], "missing")
    ]
    assert (
        sum(row.get("skipped_utterances", 0) for row in read_metrics(tmp_path / "metrics.jsonl"))
        == 1
    )


class _ThreadRecorder(NextFrameModel):
    """Records torch's CPU thread count at every training forward."""

    seen: list

    def forward(self, batch):
        self.seen.append(torch.get_num_threads())
        return super().forward(batch)


def test_threads_setting_holds_during_fit_and_is_restored_after(corpus, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's setting, which the run must give back
    try:
        seed_everything(0)
        model = _ThreadRecorder()
        model.seen = []
        _trainer(model, make_loader(corpus[0]), tmp_path, threads=1, max_steps=2).fit()
        assert model.seen and set(model.seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
