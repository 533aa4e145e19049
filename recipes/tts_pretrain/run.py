"""TTS pre-training study (Zhang et al., ICASSP 2022): data size x text similarity.

    python recipes/tts_pretrain/run.py experiment=tts_pretrain_small  # the study on the demo
    python recipes/tts_pretrain/run.py debug=tiny    # a few steps of every stage

Wiring only (the steps are ``speechssl.tts.study``; recipes/tts_pretrain/README.md has the
protocol). Under torchrun rank 0 prepares, synthesizes, scores and reports; every rank trains.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from speechssl.config import CONF_DIR, register_configs
from speechssl.data.loaders import load_manifests, prepare_once
from speechssl.demo import demo_root
from speechssl.errors import check_source_folders, run_hydra_main, run_recipe
from speechssl.tasks.report import write_results
from speechssl.train import distributed
from speechssl.tts import OOD_BIN, TacotronConfig, TacotronTTS, load_vocoder, study
from speechssl.typed import to_dataclass, to_plain

register_configs()


def load_rows(source: DictConfig, splits: list[str], run_dir: Path, filter=True) -> list[dict]:
    data_dir = run_dir / "data" / source.corpus
    prepare_once(source.corpus, source.src, data_dir)
    rows = list(load_manifests([data_dir / f"{split}.jsonl" for split in splits]).rows())
    if filter and source.max_duration > 0:  # long clips cost memory and slow the attention to learn
        rows = [row for row in rows if float(row["duration"]) <= source.max_duration]
    return rows


def pretrain(cfg, model_config, rows, fraction, run_dir, seed, name) -> tuple[Path, dict]:
    speakers = sorted({str(row["speaker"]) for row in rows})
    speaker_ids = {name: index for index, name in enumerate(speakers)}
    torch.manual_seed(seed)
    model = TacotronTTS(TacotronConfig(**{**asdict(model_config), "num_speakers": len(speakers)}))
    # the budget scales with the subset: pretrain.epochs passes over its clips
    steps = study.training_steps(
        len(rows), cfg.pretrain.batch_size, cfg.pretrain.epochs, cap=cfg.trainer.max_steps
    )
    print(
        f"\n== pre-train fraction {fraction:g} seed {seed}: {len(rows)} utterances, {steps} steps"
    )
    full = {**to_plain(cfg), "tts_model": asdict(model.config)}
    checkpoint, result = study.train_tts(
        model, rows, run_dir / f"pretrain_{name}", cfg.trainer, cfg.optim,
        max_steps=steps, batch_size=cfg.pretrain.batch_size, speaker_ids=speaker_ids,
        full_config=full, seed=seed,
    )  # fmt: skip
    return checkpoint, {**result, "epochs": cfg.pretrain.epochs}


def finetune(
    cfg, model_config, rows, dev_rows, checkpoint, fraction, run_dir, seed, name
) -> tuple[TacotronTTS, int, dict]:
    model, speaker, difference = study.finetune_model(
        model_config, checkpoint, cfg.finetune.speaker_init, seed=seed
    )
    steps = min(cfg.finetune.max_steps, cfg.trainer.max_steps)
    print(
        f"== fine-tune fraction {fraction:g}: {len(rows)} utterances, <= {steps} steps, "
        f"early stopping on {cfg.finetune.select_on}"
    )
    # the dev sentences synthesized free-running at every evaluation: selected on, or recorded
    free_running = None
    if dev_rows and (cfg.finetune.free_running_dev or cfg.finetune.select_on != "dev_loss"):
        free_running = study.FreeRunningDev(
            dev_rows, model.config, speaker, seed=cfg.seed,
            max_length_ratio=cfg.evaluation.max_length_ratio,
        )  # fmt: skip
    # every target row is the new speaker; early stopping on the dev criterion
    _, result = study.train_tts(
        model, rows, run_dir / f"finetune_{name}", cfg.trainer, cfg.optim,
        max_steps=steps, batch_size=cfg.finetune.batch_size, default_speaker=speaker,
        full_config={**to_plain(cfg), "tts_model": asdict(model.config)}, seed=seed,
        dev_rows=dev_rows, eval_every=cfg.finetune.eval_every,
        patience=cfg.finetune.patience, min_delta=cfg.finetune.min_delta,
        select_on=cfg.finetune.select_on, free_running_dev=free_running,
    )  # fmt: skip
    return model, speaker, {**result, "init_max_abs_difference": difference}


def run(cfg: DictConfig) -> None:
    # every corpus folder the run will read, checked before any work
    check_source_folders({"pretrain.src": cfg.pretrain.src, "target.src": cfg.target.src})
    study.selection_metric(cfg.finetune.select_on)  # an unknown criterion: before any work
    seeds = study.training_seeds(cfg.seeds)  # none: one line, before any work
    started = time.perf_counter()
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    # one process group for the whole recipe under torchrun (a plain run: world of size 1)
    distributed.init_from_env(cfg.trainer.device)
    run_dir = Path(cfg.run_dir)
    model_config = to_dataclass(cfg.tts, TacotronConfig)
    # rank 0 prepares the corpora; the other ranks then find them prepared
    with distributed.main_process_first("data preparation"):
        pool = load_rows(cfg.pretrain, list(cfg.pretrain.train_splits), run_dir, filter=False)
        target = load_rows(cfg.target, [cfg.target.split], run_dir)
    timings = {"prepare_s": time.perf_counter() - started}
    pool, pool_summary = study.select_pool(pool, cfg.pretrain.max_duration)
    print(f"pre-training pool: {pool_summary}")

    ood_file = cfg.test.ood_sentences or demo_root() / "ood_sentences.txt"
    target_train, target_dev, sentences, bins = study.build_study_sets(
        target, study.read_sentences(ood_file), cfg.test, cfg.target, seed=cfg.seed
    )
    bin_order = [*bins.names, OOD_BIN]
    similarity = study.similarity_by_bin(sentences, bin_order)
    # no test sentence (held-out or OOD) is pre-trained on either
    pool, dropped = study.drop_texts(pool, [sentence.text for sentence in sentences])
    frames_per_char = study.frames_per_character(target_train, model_config)
    subsets = study.pretraining_subsets(
        pool, cfg.pretrain.fractions, seed=cfg.seed, mode=cfg.pretrain.subset_mode
    )
    # the subsets themselves, for the record (and the nesting check of the smoke test)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "subsets.json").write_text(
            json.dumps({f"{f:g}": [row["id"] for row in rows] for f, rows in subsets.items()})
        )
    vocoder = load_vocoder(
        None if cfg.evaluation.vocoder == "griffin-lim" else cfg.evaluation.vocoder,
        config=model_config,
        n_iter=cfg.evaluation.griffin_lim_iters,
    )
    plotted = [sentence.id for sentence in sentences if sentence.in_domain][
        : cfg.evaluation.num_alignment_plots
    ]
    # per-sentence scoring (DTW, pyin) in worker processes when asked for (README: measured)
    executor = None
    if cfg.evaluation.workers > 1 and distributed.is_main():
        spawn = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(cfg.evaluation.workers, mp_context=spawn)
    mapper = executor.map if executor is not None else map
    try:
        reference_started = time.perf_counter()
        references = {}
        if distributed.is_main():
            references = study.load_references(
                sentences, model_config, with_f0=cfg.evaluation.with_f0, mapper=mapper
            )
        timings["references_s"] = time.perf_counter() - reference_started
        sentence_rows, alignments, stages, sizes = [], {}, {}, {}
        for fraction, rows in subsets.items():
            fraction = float(fraction)
            sizes[fraction] = study.pool_stats(rows)
            # each training seed: the same subset (cfg.seed), its own init and batch order
            for seed in seeds:
                name = f"{fraction:g}" if seed == seeds[0] else f"{fraction:g}_seed{seed}"
                stage_timings = {}
                clock = time.perf_counter()
                checkpoint, pretrain_result = (
                    pretrain(cfg, model_config, rows, fraction, run_dir, seed, name)
                    if rows else (None, {})
                )  # fmt: skip
                stage_timings["pretrain_s"] = time.perf_counter() - clock
                clock = time.perf_counter()
                model, speaker, finetune_result = finetune(
                    cfg, model_config, target_train, target_dev, checkpoint, fraction, run_dir,
                    seed, name,
                )  # fmt: skip
                stage_timings["finetune_s"] = time.perf_counter() - clock
                # synthesis and scoring on rank 0 alone; the others wait and get its rows
                scored, kept = distributed.run_on_main(
                    study.evaluate_model, model, speaker, sentences, vocoder,
                    run_dir / "wavs" / f"fraction_{name}", frames_per_char=frames_per_char,
                    seed=cfg.seed, max_length_ratio=cfg.evaluation.max_length_ratio,
                    with_f0=cfg.evaluation.with_f0, keep_alignments=plotted if seed == seeds[0] else [],
                    batch_size=cfg.evaluation.batch_size, references=references, mapper=mapper,
                    timings=stage_timings,
                )  # fmt: skip
                for sentence_id, alignment in kept.items():
                    alignments.setdefault(sentence_id, {})[fraction] = alignment
                sentence_rows += [{"fraction": fraction, "seed": seed, **r} for r in scored]
                study.record_stage(
                    stages, fraction, seed, checkpoint, pretrain_result, finetune_result,
                    stage_timings,
                )  # fmt: skip
    finally:
        if executor is not None:
            executor.shutdown()

    if not distributed.continue_on_main_only():
        return  # the summary, plots and report are rank 0's
    clock = time.perf_counter()
    summary = study.summarize(sentence_rows, bin_order)
    table = study.results_markdown(summary, bins, sizes, similarity)
    finetuned = {fraction: stage["finetune"] for fraction, stage in stages.items()}
    plots = study.write_study_plots(
        summary["table"], bin_order, alignments, run_dir, finetuned, cfg.finetune.select_on
    )
    timings["summary_s"] = time.perf_counter() - clock
    seconds = time.perf_counter() - started
    title = "TTS pre-training: data fraction x text similarity (Zhang et al., 2022)"
    results = {
        "title": title,
        "table": summary["table"],
        "deltas": summary["deltas"],
        "contrasts": summary["contrasts"],
        "bins": {
            **bins.to_dict(),
            "method": "TF-IDF char_wb 2-4-grams, max cosine to training text",
            "similarity": similarity,
        },
        "budget": study.budget_record(cfg.pretrain.epochs, cfg.finetune, stages),
        "pretrain_sizes": {f"{fraction:g}": size for fraction, size in sizes.items()},
        "pretrain_pool": pool_summary,
        "pretrain_dropped_test_texts": dropped,
        "target": {
            "train_ids": [row["id"] for row in target_train],
            "train_texts": [row["text"] for row in target_train],
            "dev_ids": [row["id"] for row in target_dev],
            "frames_per_character": frames_per_char,
        },
        "test_sentences": study.describe_sentences(sentences),
        "sentences": sentence_rows,
        "stages": {f"{fraction:g}": stage for fraction, stage in stages.items()},
        "plots": plots,
        "timings": timings,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "evaluation_workers": cfg.evaluation.workers,
    }
    markdown = f"# {title}\n\n{table}\nWall time: {seconds:.0f} s.\n"
    write_results(run_dir, results, markdown)
    print("\n" + table)
    print(f"results: {run_dir / 'results.md'} ({seconds:.0f} s)")


@hydra.main(config_path=str(CONF_DIR), config_name="tts_pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # bad option values, corpus paths, layouts, audio or checkpoints: one line and exit
    # code 1; a second run on the same run_dir stops at its lock
    run_recipe("tts_pretrain", run, cfg)


if __name__ == "__main__":
    run_hydra_main("tts_pretrain", main)
