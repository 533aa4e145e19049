"""Corpus preparation: ``speechssl prepare CORPUS SRC OUT`` writes JSONL manifests.

One module per corpus reads its real, as-distributed layout (see each module's docstring);
:mod:`speechssl.data.prepare.common` checks the audio and writes, in ``OUT``:

- ``<manifest>.jsonl``: rows ``id``, ``audio`` (absolute), ``duration`` (s), ``sample_rate``
  plus ``speaker`` / ``label`` / ``text`` / ``session`` / ``split`` / ``gender`` where the
  corpus has them;
- ``skipped.jsonl``: every input left out, as ``{"path", "reason", "detail"}``;
- ``summary.json``: per manifest the utterances, hours, speakers and label counts, and the
  skipped counts by reason (also printed).

By default every file is fully decoded to reject missing, empty, truncated, unreadable,
non-finite, zero-length and < 100 ms audio; ``verify=False`` (``--no-verify``) reads headers only.

Example:
    >>> import tempfile
    >>> from speechssl.testing import make_iemocap_tree
    >>> summary = prepare("iemocap", make_iemocap_tree(tempfile.mkdtemp()), tempfile.mkdtemp())
    >>> summary["manifests"]["all"]["utterances"] > 0
    True
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from speechssl.data.prepare import (
    cutset,
    folder,
    iemocap,
    librispeech,
    libritts,
    ljspeech,
    speech_commands,
    table,
    vctk,
    voxceleb1,
)
from speechssl.data.prepare.common import Preparer, Report, format_summary, write_outputs

__all__ = ["PREPARERS", "Preparer", "add_arguments", "prepare", "run"]

PREPARERS: dict[str, Preparer] = {
    module.PREPARER.name: module.PREPARER
    for module in (
        librispeech,
        voxceleb1,
        iemocap,
        ljspeech,
        libritts,
        vctk,
        speech_commands,
        folder,
        table,
        cutset,
    )
}


def prepare(
    corpus: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    verify: bool = True,
    labels: list[str] | None = None,
    workers: int | None = None,
    unlabelled: bool = False,
) -> dict:
    """Prepare ``corpus`` found at ``src`` (its root or the root's parent) into ``out``.

    Args:
        corpus: a key of :data:`PREPARERS` (``librispeech``, ``voxceleb1``, ``iemocap``,
            ``ljspeech``, ``libritts``, ``vctk``, ``speech_commands``, ``folder``, ``csv``,
            ``lhotse``).
        src: the corpus folder (for ``csv``: the CSV file; ``lhotse``: the CutSet file).
        out: output folder, created if needed.
        verify: decode every file (True) or read headers only (False).
        labels: for ``folder`` / ``csv`` only, the allowed label set.
        workers: threads for the audio check (default: up to 8).
        unlabelled: for ``folder`` only, every audio file is an unlabelled row (sub-folders
            are not classes); a folder with audio at its top level only is read so anyway.

    Returns:
        The summary dict also written to ``out/summary.json``.

    Raises:
        ValueError: unknown corpus, a layout that is not the expected one, or no file
            kept (one line; ``out/skipped.jsonl`` says why each file was left out).
    """
    if corpus not in PREPARERS:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {', '.join(PREPARERS)}")
    preparer = PREPARERS[corpus]
    report = Report()
    options = {}
    if labels is not None:
        if not preparer.takes_labels:
            raise ValueError(f"{corpus}: --labels applies only to the folder and csv corpora")
        options["labels"] = set(labels)
    if unlabelled:
        if corpus != "folder":
            raise ValueError(f"{corpus}: --unlabelled applies only to the folder corpus")
        options["unlabelled"] = True
    utterances = preparer.collect(src, report, **options)
    source = report.root or Path(src).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    summary = write_outputs(corpus, source, out, utterances, report, verify, workers)
    if not any(entry["utterances"] for entry in summary["manifests"].values()):
        skipped = " ".join(f"{k}={v}" for k, v in summary["skipped"].items()) or "none"
        raise ValueError(
            f"{corpus}: no file kept from {source} (skipped: {skipped}; see "
            f"{out / 'skipped.jsonl'})"
        )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``speechssl prepare``."""
    layouts = "\n".join(f"  {name:<12} {preparer.layout}" for name, preparer in PREPARERS.items())
    # keep one layout a line in --help
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = f"expected layouts:\n{layouts}"
    parser.add_argument("corpus", choices=list(PREPARERS), help="corpus layout to read")
    parser.add_argument("src", help="corpus root or its parent folder (csv: the CSV file)")
    parser.add_argument("out", help="output folder for <split>.jsonl, skipped.jsonl, summary.json")
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="read audio headers only instead of decoding every file",
    )
    parser.add_argument(
        "--labels",
        type=lambda text: [label.strip() for label in text.split(",") if label.strip()],
        default=None,
        help="folder/csv only: comma-separated label set; other labels are skipped",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="threads decoding audio (default: up to 8)"
    )
    parser.add_argument(
        "--unlabelled",
        action="store_true",
        help="folder only: every audio file (any depth) is an unlabelled row, e.g. "
        "pre-training audio (the default where all audio sits at the top level)",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``speechssl prepare``: prepare, print the summary, return 0."""
    summary = prepare(
        args.corpus,
        args.src,
        args.out,
        args.verify,
        args.labels,
        args.workers,
        unlabelled=args.unlabelled,
    )
    print(format_summary(summary))
    return 0
