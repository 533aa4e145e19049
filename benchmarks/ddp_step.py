"""A few DDP pre-training steps on every torchrun rank; rank 0 writes a JSON summary.

Started by ``benchmarks/gpu_suite.py --only ddp`` (kept apart so that each rank imports
only what a step needs):

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        benchmarks/ddp_step.py --device cuda --result /tmp/ddp.json

It goes through ``speechssl.train.distributed.init_from_env`` (NCCL on GPUs, gloo on a
CPU), wraps a HuBERT pre-training model (Base on GPUs, tiny with ``--quick`` or on a CPU)
in DDP, runs one warm-up and three timed steps in bf16 autocast with fused AdamW, and
checks that every rank holds the same weights afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import interleave
from pretrain import padded_batch

from speechssl.encoders import build_encoder
from speechssl.objectives.masked_prediction import HubertPretrainModel, MaskedPredictionConfig
from speechssl.train import distributed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny model")
    parser.add_argument("--result", type=Path, required=True, help="JSON written by rank 0")
    args = parser.parse_args(argv)
    info = distributed.init_from_env(args.device)
    if not info.is_distributed:
        sys.exit("ddp_step.py runs under torchrun with 2 or more processes")
    on_cuda = args.device == "cuda"
    device = torch.device("cuda", info.local_rank) if on_cuda else torch.device("cpu")
    torch.manual_seed(0)  # the same initial weights on every rank
    preset = "hubert_base" if on_cuda and not args.quick else "hubert_tiny"
    model = HubertPretrainModel(
        build_encoder(preset, layer_drop=0.0), MaskedPredictionConfig(num_classes=[100])
    ).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if on_cuda else None
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    torch.manual_seed(1 + info.rank)  # each rank its own data
    batch_size, seconds = (4, 15.0) if preset == "hubert_base" else (2, 1.0)
    batch, _ = padded_batch(model, batch_size, seconds, 100, device)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, _ = ddp(batch)
        loss.backward()  # DDP all-reduces the gradients here
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    timings = interleave({"ddp": step}, repeats=3, device=device)
    # after identical all-reduced updates every rank holds the same weights
    checksum = torch.stack([p.detach().float().sum() for p in model.parameters()]).sum()
    gathered = [torch.zeros_like(checksum) for _ in range(info.world_size)]
    torch.distributed.all_gather(gathered, checksum)
    if info.rank == 0:
        result = {
            "backend": torch.distributed.get_backend(),
            "world_size": info.world_size,
            "preset": preset,
            "batch": f"{batch_size} x {seconds:g} s per rank",
            "step_seconds": timings["ddp"].median,
            "loss": timings["ddp"].result,
            "ranks_agree": all(torch.equal(gathered[0], other) for other in gathered),
        }
        args.result.write_text(json.dumps(result))
    # leave together: a rank that tears its connections down while another still uses
    # them makes gloo abort that one (seen once under heavy load)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
