"""The checkpoint record: what the Trainer writes is what every reader reads, old files load."""

from __future__ import annotations

import pytest
import torch

import speechssl
from speechssl.checkpoint_format import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    EncoderSpec,
    read_checkpoint,
    write_checkpoint,
)
from speechssl.encoders import build_encoder
from speechssl.train import OptimConfig, Trainer, TrainerConfig
from speechssl.train.config import EarlyStoppingConfig


class Pretraining(torch.nn.Module):
    """A model that keeps its encoder at ``model.encoder``, as every recipe's does."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = build_encoder("tpc_tiny")
        self.head = torch.nn.Linear(self.encoder.output_dim, 1)

    def forward(self, batch):
        wav, lengths = batch
        hidden = self.encoder(wav, lengths).last_hidden_state  # (B, F, D)
        return self.head(hidden).pow(2).mean(), {}


def _wav(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4000, generator=generator), torch.tensor([4000, 3000])


def test_a_trainer_checkpoint_is_one_record_every_reader_agrees_on(tmp_path):
    torch.manual_seed(0)
    model = Pretraining()
    data = [_wav(seed) for seed in range(2)]
    trainer = Trainer(
        model,
        data,
        valid_loader=data[:1],
        trainer_cfg=TrainerConfig(
            max_steps=2,
            eval_every=1,
            tensorboard=False,
            device="cpu",
            early_stopping=EarlyStoppingConfig(metric="loss"),
        ),
        optim_cfg=OptimConfig(lr=1e-3),
        run_dir=tmp_path,
        show_progress=False,
    )
    result = trainer.fit()
    record = read_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert record.format_version == FORMAT_VERSION
    assert record.best_value == pytest.approx(result["best_value"])
    assert record.encoder_spec == EncoderSpec.of(model.encoder, prefix="encoder.")
    encoder = speechssl.load_encoder(tmp_path / "checkpoints" / "best.pt")
    for key, value in record.encoder_spec.weights(record.model).items():
        assert torch.equal(encoder.state_dict()[key], value), key


def test_a_checkpoint_in_the_format_before_format_version_still_loads(tmp_path):
    """Today's dict, written by hand (no ``format_version``): load_encoder and the record read it."""
    torch.manual_seed(1)
    model = Pretraining()
    old = {
        "model": model.state_dict(),
        "optimizer": {},
        "step": 7,
        "epoch": 1,
        "config": {"trainer": {"max_steps": 7}},
        "trainer": {"best_value": 0.5, "best_step": 6},
        "encoder_spec": {**model.encoder.spec(), "prefix": "encoder."},
    }
    torch.save(old, tmp_path / "old.pt")
    record = read_checkpoint(tmp_path / "old.pt")
    assert (record.format_version, record.step, record.best_value) == (0, 7, 0.5)
    encoder = speechssl.load_encoder(tmp_path / "old.pt")
    wav, lengths = _wav(3)
    with torch.no_grad():
        expected = model.eval().encoder(wav, lengths).last_hidden_state
        assert torch.equal(encoder(wav, lengths).last_hidden_state, expected)


def test_a_newer_format_or_a_bad_spec_is_one_line(tmp_path):
    future = Checkpoint(model={}, step=1, format_version=FORMAT_VERSION + 1)
    write_checkpoint(future, tmp_path / "future.pt")
    with pytest.raises(
        CheckpointError, match=f"format version {FORMAT_VERSION + 1}; this speechssl reads"
    ):
        read_checkpoint(tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="encoder_spec needs a 'family'"):
        Checkpoint.from_dict({"model": {}, "step": 1, "encoder_spec": {"config": {}}})
    with pytest.raises(TypeError, match="not saveable"):
        write_checkpoint({"model": {}, "step": 1, "bad": {(1, 2): 3}}, tmp_path / "bad.pt")
