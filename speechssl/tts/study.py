"""The TTS pre-training study of Zhang et al. (ICASSP 2022) as reusable steps.

Grid: pre-training fraction ``f`` in {0, 1/8, 1/4, 1/2, 1} (nested seeded subsets of the
multi-speaker pool, :func:`pretraining_subsets`) -> fine-tuning on the same target data with
the same budget -> synthesis of the target speaker's held-out sentences (binned by
character n-gram TF-IDF similarity to the target *training* text) and of out-of-domain
sentences -> objective metrics per sentence -> one table per fraction x bin.

Order of the data steps matters for leakage: :func:`split_target` holds the test sentences
out first and drops every training row whose normalised text equals a test sentence; only
then does :func:`build_test_set` fit the similarity vectorizer, on the remaining training
text alone.

Steps:
    split_target          target rows -> (training rows, held-out rows)
    build_test_set        held-out + OOD sentences -> TestSentence list and the bins
    pretraining_subsets   pool rows -> {fraction: rows}, nested and seeded
    train_tts             a TacotronTTS on rows with the shared Trainer
    finetune_model        a fine-tuning model that starts from a pre-trained checkpoint
    evaluate_model        synthesize, vocode, write WAVs, per-sentence metrics
    summarize / results_markdown / write_study_plots   the table and the plots

Example:
    >>> rows = [{"id": f"LJ{i}", "audio": f"/{i}.wav", "text": f"Sentence number {i}."}
    ...         for i in range(10)]
    >>> train, test = split_target(rows, num_test=3, seed=0)
    >>> len(train), len(test)
    (7, 3)
    >>> sentences, bins = build_test_set(train, test, ["An unrelated remark."], num_bins=2)
    >>> [sentence.bin for sentence in sentences][-1], len(bins.thresholds)
    ('ood', 1)
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from speechssl import audio
from speechssl.safe_io import load_torch_file
from speechssl.train import distributed
from speechssl.train.checkpoint import latest_checkpoint
from speechssl.train.config import TrainerConfig
from speechssl.train.trainer import Trainer
from speechssl.tts.data import TTSDataset, collate_tts
from speechssl.tts.metrics import (
    attention_diagonality,
    attention_focus_rate,
    f0_metrics,
    mel_cepstral_distortion_dtw,
    stop_length_error,
)
from speechssl.tts.model import TacotronConfig, TacotronTTS
from speechssl.tts.plots import plot_alignments, plot_metric_vs_fraction
from speechssl.tts.similarity import OOD_BIN, SimilarityBins, TrainingTextSimilarity
from speechssl.tts.similarity import similarity_bins as make_bins
from speechssl.tts.subsets import nested_fractions
from speechssl.tts.text import CharacterFrontend, normalize_text
from speechssl.typed import to_dataclass

__all__ = [
    "METRICS",
    "TestSentence",
    "build_test_set",
    "describe_sentences",
    "evaluate_model",
    "finetune_model",
    "frames_per_character",
    "max_parameter_difference",
    "pretraining_subsets",
    "read_sentences",
    "results_markdown",
    "split_target",
    "summarize",
    "train_tts",
    "write_study_plots",
]

# per-sentence metrics, in table order; OOD sentences have no reference: attention and
# stop-length metrics only
METRICS = (
    "mcd_dtw_db",
    "mcd_dtw_sl_db",
    "log_f0_rmse_cents",
    "voicing_decision_error",
    "attention_focus_rate",
    "attention_diagonality",
    "stop_length_error",
)


def _key(text: str) -> str:
    """The text as the model reads it: normalised, case and spacing folded."""
    return " ".join(normalize_text(text).lower().split())


def split_target(
    rows: Sequence[Mapping], num_test: int, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Hold out ``num_test`` target sentences (seeded); the rest trains.

    Training rows whose normalised text equals a held-out sentence are dropped too (a corpus
    may read one sentence twice), so no test text is ever trained on.

    Raises:
        ValueError: fewer than ``num_test + 1`` distinct sentences.
    """
    rows = [dict(row) for row in rows]
    texts = sorted({_key(row["text"]) for row in rows})
    if num_test < 1 or len(texts) <= num_test:
        raise ValueError(
            f"cannot hold out {num_test} of {len(texts)} distinct target sentences "
            "(need at least one left to train on)"
        )
    random.Random(f"{seed}:target-test").shuffle(texts)
    held_out = set(texts[:num_test])
    test, train, seen = [], [], set()
    for row in sorted(rows, key=lambda row: row["id"]):
        key = _key(row["text"])
        if key in held_out:
            if key not in seen:  # one reference recording per test sentence
                seen.add(key)
                test.append(row)
        else:
            train.append(row)
    return train, test


@dataclass
class TestSentence:
    """One test sentence: ``reference`` is its recording (None for out-of-domain text)."""

    __test__ = False  # not a pytest test class despite the name

    id: str
    text: str
    bin: str
    similarity: float
    reference: str | None = None

    @property
    def in_domain(self) -> bool:
        return self.reference is not None


def read_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a text file (the out-of-domain sentences)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sentence file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_test_set(
    train_rows: Sequence[Mapping],
    test_rows: Sequence[Mapping],
    ood_sentences: Sequence[str],
    num_bins: int = 3,
    thresholds: Sequence[float] | None = None,
) -> tuple[list[TestSentence], SimilarityBins]:
    """Score every test sentence against the target *training* text and bin it.

    The vectorizer is fitted on ``train_rows`` texts only. Held-out sentences are cut into
    ``num_bins`` bins at their score quantiles (or at ``thresholds``); OOD sentences form
    the ``"ood"`` bin. Raises ``ValueError`` if a test text also occurs in training.
    """
    training_keys = {_key(row["text"]) for row in train_rows}
    leaked = [row["id"] for row in test_rows if _key(row["text"]) in training_keys]
    if leaked:
        raise ValueError(f"test sentences also in the training text: {leaked[:5]}")
    similarity = TrainingTextSimilarity([row["text"] for row in train_rows])
    texts = [row["text"] for row in test_rows] + list(ood_sentences)
    flags = [False] * len(test_rows) + [True] * len(ood_sentences)
    scores = similarity.score(texts)
    bins = make_bins(scores, num_bins=num_bins, thresholds=thresholds, out_of_domain=flags)
    sentences = [
        TestSentence(row["id"], row["text"], label, score, row["audio"])
        for row, label, score in zip(test_rows, bins.labels, scores, strict=False)
    ]
    for number, (text, score) in enumerate(
        zip(ood_sentences, scores[len(test_rows) :], strict=True)
    ):
        sentences.append(TestSentence(f"ood_{number:03d}", text, OOD_BIN, score))
    return sentences, bins


def pretraining_subsets(
    rows: Sequence[Mapping], fractions: Sequence[float], seed: int = 0, mode: str = "round_robin"
) -> dict[float, list[dict]]:
    """``{fraction: rows}``: nested, seeded subsets of the pre-training pool by speaker and
    utterance (see :func:`speechssl.tts.subsets.nested_fractions`); fraction 0 is empty."""
    by_id = {row["id"]: dict(row) for row in rows}
    pairs = [(row["id"], str(row.get("speaker", "unknown"))) for row in rows]
    subsets = nested_fractions(pairs, fractions=[float(f) for f in fractions], seed=seed, mode=mode)
    return {fraction: [by_id[uid] for uid in ids] for fraction, ids in subsets.items()}


def frames_per_character(rows: Sequence[Mapping], model_config: TacotronConfig) -> float:
    """Median mel frames per character (EOS included) of ``rows``: the speaking rate used to
    expect a length for sentences without a recording."""
    encoder = CharacterFrontend(normalize=model_config.normalize_text)
    rates = []
    for row in rows:
        frames = (
            1 + int(float(row["duration"]) * model_config.sample_rate) // model_config.hop_length
        )
        rates.append(frames / len(encoder.encode(row["text"])))
    if not rates:
        raise ValueError("no rows to measure the speaking rate on")
    return float(np.median(rates))


def _loader(rows, model: TacotronTTS, speaker_ids, default_speaker, batch_size, seed, workers):
    dataset = TTSDataset(
        rows,
        model.config.sample_rate,
        speaker_ids=speaker_ids,
        frontend=model.frontend,
        default_speaker=default_speaker,
    )
    info = distributed.get_info()
    sampler = None
    per_rank = len(dataset)
    if info.world_size > 1:
        # under torchrun each rank trains on its own share of the clips (reshuffled every
        # epoch: the Trainer calls sampler.set_epoch)
        sampler = torch.utils.data.DistributedSampler(
            dataset, info.world_size, info.rank, shuffle=True, seed=seed, drop_last=True
        )
        per_rank = len(sampler)
    # a 1/8 subset of a small pool can hold fewer clips than a batch: cap the batch there
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=max(1, min(batch_size, per_rank)),
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate_tts,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
    )


def train_tts(
    model: TacotronTTS,
    rows: Sequence[Mapping],
    run_dir: str | Path,
    trainer_config,
    optim_config,
    *,
    max_steps: int,
    batch_size: int,
    speaker_ids: Mapping[str, int] | None = None,
    default_speaker: int = 0,
    full_config=None,
    seed: int = 0,
) -> tuple[Path, dict]:
    """Train ``model`` on ``rows`` for ``max_steps`` with the shared Trainer.

    Returns the final checkpoint path and the Trainer's result. A finished run directory is
    resumed (and so not trained again) by ``trainer.resume=auto``.
    """
    if not rows:
        raise ValueError("no training rows")
    trainer_config = replace(
        to_dataclass(trainer_config, TrainerConfig), max_steps=max_steps, max_epochs=0
    )
    loader = _loader(
        rows, model, speaker_ids, default_speaker, batch_size, seed, trainer_config.num_workers
    )
    trainer = Trainer(
        model,
        loader,
        trainer_cfg=trainer_config,
        optim_cfg=optim_config,
        full_config=full_config,
        run_dir=run_dir,
        sample_rate=model.config.sample_rate,
    )
    result = trainer.fit()
    checkpoint = Path(run_dir) / "checkpoints" / f"step_{trainer.step:08d}.pt"
    if not checkpoint.is_file():
        checkpoint = latest_checkpoint(Path(run_dir) / "checkpoints")
    return Path(checkpoint), result


def max_parameter_difference(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> float:
    """Largest ``|model parameter - state_dict entry|`` over the entries of ``state_dict``
    whose shapes match the model's (the grown speaker table is compared row by row)."""
    largest = 0.0
    own = model.state_dict()
    for name, value in state_dict.items():
        mine = own[name]
        if mine.shape != value.shape:  # speaker table: the pre-trained rows come first
            mine = mine[: value.shape[0]]
        largest = max(largest, float((mine.float() - value.float()).abs().max()))
    return largest


def finetune_model(
    config: TacotronConfig, checkpoint: str | Path | None, speaker_init: str = "mean", seed: int = 0
) -> tuple[TacotronTTS, int, float]:
    """The model fine-tuning starts from, its target speaker id, and the check
    ``max |parameter - pre-trained parameter|`` (0.0 when loaded exactly; NaN without one).

    Without a checkpoint (fraction 0) it is a fresh one-speaker model (speaker 0). With one,
    the model is built with the checkpoint's Tacotron config, loads the pre-trained weights
    and appends a speaker vector for the target (``speaker_init``: ``mean`` or ``random``).
    """
    if checkpoint is None:
        torch.manual_seed(seed)
        return TacotronTTS(replace(config, num_speakers=1)), 0, float("nan")
    state = load_torch_file(checkpoint, "checkpoint")
    spec = state.get("config", {}).get("tts_model")
    pretrained_config = TacotronConfig(**spec) if spec else config
    model = TacotronTTS(pretrained_config)
    model.load_pretrained(state["model"])
    difference = max_parameter_difference(model, state["model"])
    speaker = model.add_speaker(init=speaker_init, seed=seed)
    return model, speaker, difference


@torch.no_grad()
def evaluate_model(
    model: TacotronTTS,
    speaker: int,
    sentences: Sequence[TestSentence],
    vocoder,
    out_dir: str | Path,
    *,
    frames_per_char: float,
    seed: int = 0,
    max_length_ratio: float = 3.0,
    with_f0: bool = True,
    keep_alignments: Sequence[str] = (),
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Synthesize every sentence for ``speaker``, write ``out_dir/<id>.wav``, score it.

    MCD-DTW(-SL) compares the reference recording with the *predicted mel* (so the vocoder's
    error is not counted); log-F0 RMSE and voicing error compare it with the vocoded WAV,
    paired by the MCD's DTW path. Sentences without a reference get the attention metrics
    and a stop-length error against ``characters x frames_per_char``. The decoder may run
    for ``max_length_ratio`` times the expected length at most.

    Returns one row per sentence (``id``, ``bin``, ``similarity``, metrics, ``frames``,
    ``stopped``) and the alignments ``(S, L)`` of the ids in ``keep_alignments``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    model.eval()
    rows, alignments = [], {}
    for sentence in sentences:
        reference = None
        characters = len(model.frontend.encode(sentence.text))
        if sentence.reference is not None:
            reference = audio.load(sentence.reference, sample_rate=config.sample_rate)
            expected_frames = 1 + reference.numel() // config.hop_length
        else:
            expected_frames = max(1, round(characters * frames_per_char))
        max_steps = math.ceil(max_length_ratio * expected_frames / config.frames_per_step) + 1
        # prenet dropout stays on at inference in Tacotron 2: seed for repeatable output
        torch.manual_seed(seed)
        output = model.synthesize([sentence.text], speaker=speaker, max_decoder_steps=max_steps)
        frames = int(output.mel_lengths[0])
        mel = output.mel[0, :, :frames]  # (n_mels, F)
        # the vocoder runs on the CPU (Griffin-Lim loops per utterance; the model may be on a GPU)
        wav, wav_lengths = vocoder(
            output.mel[:, :, :frames].cpu(), output.mel_lengths.clamp_max(frames).cpu()
        )
        wav = wav[0, : int(wav_lengths[0])].cpu()
        audio.save(out_dir / f"{sentence.id}.wav", wav, vocoder.sample_rate)
        steps = frames // config.frames_per_step
        alignment = output.alignments[0, :steps, :characters].cpu()  # (S, L)
        row = {
            "id": sentence.id,
            "text": sentence.text,
            "bin": sentence.bin,
            "similarity": sentence.similarity,
            "frames": frames,
            "expected_frames": expected_frames,
            "stopped": bool(output.stopped[0]),
            "attention_focus_rate": attention_focus_rate(alignment),
            "attention_diagonality": attention_diagonality(alignment),
            "stop_length_error": float(stop_length_error([frames], [expected_frames])[0]),
        }
        if reference is not None:
            mcd, path = mel_cepstral_distortion_dtw(
                reference,
                mel.double().cpu().numpy(),
                config.sample_rate,
                n_fft=config.n_fft,
                hop_length=config.hop_length,
                n_mels=config.n_mels,
                return_path=True,
            )
            length_ratio = max(expected_frames, frames) / max(min(expected_frames, frames), 1)
            row["mcd_dtw_db"] = mcd
            row["mcd_dtw_sl_db"] = mcd * length_ratio
            if with_f0 and wav.numel() > config.n_fft:
                pitch = f0_metrics(
                    reference,
                    wav,
                    config.sample_rate,
                    frame_length=config.n_fft,
                    hop_length=config.hop_length,
                    n_mels=config.n_mels,
                    path=path,
                )
                row["log_f0_rmse_cents"] = pitch["log_f0_rmse_cents"]
                row["voicing_decision_error"] = pitch["voicing_decision_error"]
        if sentence.id in keep_alignments:
            alignments[sentence.id] = alignment.numpy()
        rows.append(row)
    return rows, alignments


def _mean(values: Sequence[float]) -> float:
    finite = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(rows: Sequence[Mapping], bin_order: Sequence[str]) -> list[dict]:
    """Per-sentence rows (with ``fraction``) -> one row per fraction x bin: ``n`` and the
    mean of every metric (NaN where no sentence of the cell has it)."""
    cells = []
    for fraction in sorted({float(row["fraction"]) for row in rows}):
        for name in bin_order:
            members = [r for r in rows if float(r["fraction"]) == fraction and r["bin"] == name]
            if not members:
                continue
            cell = {"fraction": fraction, "bin": name, "n": len(members)}
            for metric in METRICS:
                cell[metric] = _mean([member.get(metric, float("nan")) for member in members])
            cell["stopped"] = sum(bool(member["stopped"]) for member in members) / len(members)
            cells.append(cell)
    return cells


def _fraction_text(fraction: float) -> str:
    if fraction in (0.0, 1.0):
        return f"{fraction:g}"
    denominator = round(1 / fraction)
    return f"1/{denominator}" if abs(1 / denominator - fraction) < 1e-9 else f"{fraction:g}"


def results_markdown(
    cells: Sequence[Mapping], bins: SimilarityBins, pretrain_sizes: Mapping[float, Mapping]
) -> str:
    """The study's table (one row per fraction x bin) plus the bins and subset sizes."""
    header = ["fraction", "pre-train utts (spk)", "bin", "n", *METRICS, "stopped"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for cell in cells:
        size = pretrain_sizes.get(cell["fraction"], {})
        values = [
            _fraction_text(cell["fraction"]),
            f"{size.get('utterances', 0)} ({size.get('speakers', 0)})",
            cell["bin"],
            str(cell["n"]),
            *(f"{cell[metric]:.3f}" if math.isfinite(cell[metric]) else "–" for metric in METRICS),
            f"{cell['stopped']:.2f}",
        ]
        lines.append("| " + " | ".join(values) + " |")
    thresholds = ", ".join(f"{value:.3f}" for value in bins.thresholds)
    counts = bins.to_dict()["counts"]
    notes = [
        "",
        (
            "Text-similarity bins (TF-IDF char 2-4-gram max cosine to the target training "
            f"text): {' < '.join(bins.names)} cut at [{thresholds}]; sentences per bin: {counts}."
        ),
        "`ood`: out-of-domain sentences without a recording (attention and stop-length only).",
        "`stopped`: share of sentences whose stop token fired before the length guard.",
    ]
    return "\n".join(lines + notes) + "\n"


def write_study_plots(
    sentence_rows: Sequence[Mapping],
    bin_order: Sequence[str],
    alignments: Mapping[str, Mapping[float, np.ndarray]],
    out_dir: str | Path,
) -> list[str]:
    """``<metric>.png`` (metric vs fraction, a line per bin) for each metric some sentence
    has, and ``alignment_<id>.png`` (the sentence under every fraction)."""
    out_dir = Path(out_dir)
    paths = []
    for metric in METRICS:
        rows = [row for row in sentence_rows if metric in row]
        if rows:
            order = [name for name in bin_order if any(row["bin"] == name for row in rows)]
            paths.append(plot_metric_vs_fraction(rows, metric, out_dir / f"{metric}.png", order))
    for sentence_id, by_fraction in alignments.items():
        fractions = sorted(by_fraction)
        paths.append(
            plot_alignments(
                [by_fraction[fraction] for fraction in fractions],
                [f"{sentence_id}, fraction {_fraction_text(fraction)}" for fraction in fractions],
                out_dir / f"alignment_{sentence_id}.png",
                columns=min(len(fractions), 3),
            )
        )
    return paths


def describe_sentences(sentences: Sequence[TestSentence]) -> list[dict]:
    """JSON-ready list of the test sentences."""
    return [asdict(sentence) for sentence in sentences]
