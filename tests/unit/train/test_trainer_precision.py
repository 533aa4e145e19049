"""The Trainer's GPU-oriented branches, run where torch allows them on a CPU.

fp16 autocast with the grad scaler, fused AdamW and ``trainer.compile`` all run on a CPU in
torch >= 2.4; pinned-memory transfers need a GPU (that test is skipped without one, and the
GPU suite ``benchmarks/gpu_suite.py --only train_paths`` runs it there).
"""

import pytest
import torch
from train_toy import NextFrameModel, make_loader

from speechssl.train import Trainer, TrainerConfig, seed_everything
from speechssl.train.config import OptimConfig
from speechssl.train.progress import read_metrics
from speechssl.typed import to_dataclass


def _fit(loader, run_dir, optim=None, model_options=None, **overrides):
    seed_everything(0)
    model = NextFrameModel(**(model_options or {}))
    config = {
        "device": "cpu",
        "log_every": 1,
        "tensorboard": False,
        "checkpoint_every": 100,
        "max_steps": 3,
        **overrides,
    }
    trainer = Trainer(
        model,
        loader,
        trainer_cfg=to_dataclass(config, TrainerConfig),
        optim_cfg=optim or OptimConfig(lr=3e-3, schedule="constant"),
        run_dir=run_dir,
        show_progress=False,
    )
    return trainer, trainer.fit(), model


def _losses(run_dir):
    rows = read_metrics(run_dir / "metrics.jsonl")
    return [row["loss"] for row in rows if row["split"] == "train"]


def test_fp16_with_grad_scaler_trains_on_the_cpu_and_matches_fp32(corpus, tmp_path):
    trainer, result, model = _fit(make_loader(corpus[0]), tmp_path / "fp16", precision="fp16")
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() == 2.0**16
    assert result["nonfinite_steps"] == 0
    assert model.predictor.weight.dtype == torch.float32  # autocast keeps fp32 master weights
    _, _, reference = _fit(make_loader(corpus[0]), tmp_path / "fp32")
    fp16_losses, fp32_losses = _losses(tmp_path / "fp16"), _losses(tmp_path / "fp32")
    # the scaled fp16 steps follow the fp32 ones to fp16 rounding
    assert fp16_losses == pytest.approx(fp32_losses, rel=2e-2)
    assert torch.allclose(model.predictor.weight, reference.predictor.weight, atol=1e-2)


def test_fp16_non_finite_step_is_skipped_and_halves_the_scale(corpus, tmp_path):
    trainer, result, _ = _fit(
        make_loader(corpus[0]), tmp_path, precision="fp16", model_options={"nan_at": {1}}
    )
    assert result["nonfinite_steps"] == 1
    assert trainer.scaler.get_scale() == 2.0**15  # the scaler backed off once


def test_fused_adamw_on_the_cpu_matches_the_foreach_update(corpus, tmp_path):
    fused = OptimConfig(lr=3e-3, schedule="constant", fused=True)
    unfused = OptimConfig(lr=3e-3, schedule="constant", fused=False)
    trainer, _, fused_model = _fit(make_loader(corpus[0]), tmp_path / "fused", fused)
    assert trainer.optimizer.defaults["fused"] is True
    _, _, reference = _fit(make_loader(corpus[0]), tmp_path / "foreach", unfused)
    assert torch.allclose(fused_model.predictor.weight, reference.predictor.weight, atol=1e-6)


def test_compile_trains_like_eager(corpus, tmp_path):
    trainer, result, _ = _fit(make_loader(corpus[0]), tmp_path / "compiled", compile=True)
    assert result["nonfinite_steps"] == 0
    assert hasattr(trainer.forward_model, "_orig_mod")  # the compiled wrapper
    _fit(make_loader(corpus[0]), tmp_path / "eager")
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a GPU")
def test_pinned_batches_reach_the_gpu(corpus, tmp_path):
    loader = make_loader(corpus[0])
    pinned = torch.utils.data.DataLoader(
        loader.dataset,
        batch_sampler=loader.batch_sampler,
        collate_fn=loader.collate_fn,
        pin_memory=True,
    )
    assert next(iter(pinned)).wav.is_pinned()
    _, result, model = _fit(pinned, tmp_path, device="cuda", precision="bf16")
    assert result["nonfinite_steps"] == 0 and model.predictor.weight.is_cuda
