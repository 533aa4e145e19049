"""Fine-tune an utterance classifier on your own labelled audio.

    python recipes/finetune/run.py                    # the embedded demo set, ~1 min on a CPU
    python recipes/finetune/run.py data.train=train.csv data.valid=valid.csv \\
        data.test=test.csv upstream=hubert_base_ls960.pt head.mode=finetune run_dir=runs/mine
    speechssl predict runs/mine a.wav b.wav           # classify new files with the run

``data.train/valid/test``: a CSV with a ``path,label`` header, a JSONL manifest from
``speechssl prepare folder|csv``, or a folder with one sub-folder per label. See
recipes/finetune/README.md for what lands in ``run_dir``. Bad data ends with one line on
stderr and exit code 1.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from speechssl.config import CONF_DIR, register_configs
from speechssl.data.compact import Manifest
from speechssl.data.layouts.folder import write_labelled_csv
from speechssl.data.loaders import DataConfig, prepare_once
from speechssl.data.manifest import read_jsonl
from speechssl.errors import run_hydra_main, run_recipe
from speechssl.heads.config import ClassifierHeadConfig, head_config
from speechssl.heads.linear_probe import LinearProbeConfig
from speechssl.tasks.classification import (
    TransferConfig,
    default_cache,
    predict,
    train_classifier,
)
from speechssl.tasks.finetune import budget_line, score_predictions, write_finetune_outputs
from speechssl.tasks.predict import write_model_file
from speechssl.tasks.user_data import (
    FinetuneDataConfig,
    load_upstream,
    load_user_data,
    register_finetune_schema,
)
from speechssl.train import distributed
from speechssl.train.config import TrainerConfig
from speechssl.typed import to_dataclass, to_plain

register_configs()
register_finetune_schema()


def demo_csvs(cfg: DictConfig, run_dir: Path) -> dict[str, str]:
    """Write the demo corpus as ``train/valid/test.csv`` (split by session), the same
    ``path,label`` files a user would give."""
    out = run_dir / "data" / "demo"
    prepare_once("iemocap", cfg.demo.src, out)
    rows = list(read_jsonl(out / "all.jsonl"))
    sessions = {
        "train": cfg.demo.train_sessions,
        "valid": cfg.demo.valid_sessions,
        "test": cfg.demo.test_sessions,
    }
    paths = {}
    for name, wanted in sessions.items():
        selected = [(row["audio"], row["label"]) for row in rows if row["session"] in wanted]
        paths[name] = str(write_labelled_csv(out / f"{name}.csv", selected))
    return paths


def transfer_config(cfg: DictConfig, data: FinetuneDataConfig) -> TransferConfig:
    """The budget: ``transfer`` (``transfer.epochs`` is the one knob), batching from ``data``,
    engine settings (device, precision, threads) from ``trainer``."""
    transfer = to_dataclass(cfg.transfer, TransferConfig)
    trainer = to_dataclass(cfg.trainer, TrainerConfig)
    batching = {field.name: getattr(data, field.name) for field in dataclasses.fields(DataConfig)}
    return dataclasses.replace(transfer, data=DataConfig(**batching), trainer=trainer)


def score(model, rows: list[dict], labels: list[str], config: TransferConfig, cache) -> dict:
    """Accuracy, UA, per-class scores and per-file predictions of ``rows`` (a frozen
    upstream's cached features are read, not encoded again)."""
    predictions = predict(model, Manifest.from_rows(rows), config, labels=labels, cache=cache)
    return score_predictions(rows, predictions, labels)


def chosen_head(cfg: DictConfig):
    """The head config: the probe for frozen upstreams (default), SUPERB's mean-pool head
    when the probe is asked to fine-tune (as ``speechssl evaluate`` does), else ``head``."""
    head = head_config(cfg.head)
    if isinstance(head, LinearProbeConfig) and head.mode == "finetune":
        return ClassifierHeadConfig(mode="finetune")
    if head.kind not in ("classifier", "linear_probe"):
        raise ValueError(f"head={head.kind}: this recipe trains an utterance classifier head")
    return head


def plan_line(head, config: TransferConfig) -> str:
    if isinstance(head, LinearProbeConfig):
        return "head linear_probe (frozen; layer and C chosen on valid)"
    metric = "valid accuracy" if config.monitor == "accuracy" else "valid loss"
    return (
        f"head {head.mode} mean-pool, at most {config.epochs} epochs (stops after "
        f"{config.patience} without a better {metric})"
    )


def finetune(cfg: DictConfig) -> str:
    run_dir = Path(cfg.run_dir)
    data = to_dataclass(cfg.data, FinetuneDataConfig)
    if data.train is None:
        print("data.train not set: running the embedded demo set (sessions 1-3/4/5)")
        data = dataclasses.replace(data, **demo_csvs(cfg, run_dir))
    user = load_user_data(data, run_dir / "data", seed=cfg.seed)
    encoder, upstream_kind = load_upstream(cfg.upstream, seed=cfg.seed, n_mels=cfg.fbank_n_mels)
    head = chosen_head(cfg)
    config = transfer_config(cfg, data)
    print(
        f"{len(user.train)} train / {len(user.valid)} valid / {len(user.test)} test utterances, "
        f"{len(user.labels)} classes; upstream {cfg.upstream} ({upstream_kind}, "
        f"{sum(p.numel() for p in encoder.parameters()):,} parameters), {plan_line(head, config)}"
    )
    # frozen features are kept in run_dir: a resumed run reads them instead of encoding
    cache = default_cache(config, run_dir / "train")
    trained = train_classifier(
        encoder,
        head,
        Manifest.from_rows(user.train),
        Manifest.from_rows(user.valid),
        user.labels,
        config,
        run_dir / "train",
        seed=cfg.seed,
        full_config=to_plain(cfg),
        cache=cache,
    )
    checkpoint = write_model_file(
        run_dir,
        trained,
        upstream=str(cfg.upstream),
        upstream_kind=upstream_kind,
        head=head,
        labels=user.labels,
        data=config.data,
    )
    scores = {}
    if user.valid:
        scores["valid"] = score(trained.model, user.valid, user.labels, config, cache)
    if user.test:
        scores["test"] = score(trained.model, user.test, user.labels, config, cache)
    summary = {
        "upstream": str(cfg.upstream),
        "upstream_kind": upstream_kind,
        "head": head.kind,
        "head_mode": head.mode,
        "labels": user.labels,
        "num_train": len(user.train),
        "num_valid": len(user.valid),
        "num_test": len(user.test),
        "valid_source": user.valid_source,
        "training": trained.result["training"],
        "budget_line": budget_line(trained.result["training"]),
        "best_valid_accuracy": trained.best_valid_accuracy,
        "checkpoint": str(checkpoint),
    }
    (run_dir / "labels.json").write_text(json.dumps(user.labels) + "\n")
    return write_finetune_outputs(run_dir, summary, scores, user.labels)


def run(cfg: DictConfig) -> None:
    """Fine-tune and print the table (what ``main`` runs inside the error boundary)."""
    table = finetune(cfg)
    run_dir = Path(cfg.run_dir)
    print("\n" + table)
    print(
        f"results: {run_dir / 'results.md'}; predict with: speechssl predict {run_dir} FILE.wav ..."
    )


@hydra.main(config_path=str(CONF_DIR), config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # under torchrun, rank 0 runs the whole recipe as a single process (no DDP: the data
    # preparation and outputs are not split by rank); the other ranks stop here
    distributed.init_from_env(cfg.trainer.device)
    if not distributed.continue_on_main_only():
        return
    # bad option values, user data or upstream: one line and exit code 1, no traceback;
    # a second run on the same run_dir stops at its lock
    run_recipe("finetune", run, cfg)


if __name__ == "__main__":
    run_hydra_main("finetune", main)
