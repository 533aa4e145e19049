"""LJSpeech: ``LJSpeech-1.1/metadata.csv`` + ``LJSpeech-1.1/wavs/LJ001-0001.wav``.

A clip stored in another audio format under the same id (``wavs/LJ001-0001.opus``) is
read in place of the ``.wav`` (``common.resolve_audio``).

``metadata.csv`` has no header; each line is ``id|raw text|normalized text`` and the text
may contain quotes, so it is read with ``csv.QUOTE_NONE`` (as torchaudio does). Writes
``all.jsonl`` with ``text`` = the normalized text and ``speaker`` = ``LJ``.

Example:
    >>> import tempfile
    >>> from speechssl.testing import make_ljspeech_tree
    >>> from speechssl.data.prepare import prepare
    >>> summary = prepare("ljspeech", make_ljspeech_tree(tempfile.mkdtemp()), tempfile.mkdtemp())
    >>> summary["manifests"]["all"]["speakers"]
    1
"""

from __future__ import annotations

import csv
from pathlib import Path

from speechssl.data.prepare.common import Preparer, Report, Utterance, find_root, resolve_audio

LAYOUT = "LJSpeech-1.1/metadata.csv and LJSpeech-1.1/wavs/LJ001-0001.wav"
SPEAKER = "LJ"


def collect(src, report: Report) -> list[Utterance]:
    root = find_root(
        report,
        src,
        "ljspeech",
        ["LJSpeech-1.1"],
        lambda path: (path / "metadata.csv").is_file() and (path / "wavs").is_dir(),
        f"no metadata.csv + wavs/ under {Path(src).absolute()} (expected {LAYOUT})",
    )
    metadata = root / "metadata.csv"
    try:
        with open(metadata, encoding="utf-8", newline="") as file:
            lines = list(csv.reader(file, delimiter="|", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(
            f"ljspeech: cannot read {metadata}: {str(error).splitlines()[0]}"
        ) from None
    utterances = []
    for line_number, fields in enumerate(lines, 1):
        if not fields:
            continue
        if len(fields) != 3 or not fields[0].strip() or not fields[2].strip():
            detail = f"line {line_number}: {'|'.join(fields)[:120]}"
            report.skip(metadata, "malformed-line", detail)
            continue
        utterance_id, _raw_text, normalized_text = (field.strip() for field in fields)
        # wavs/<id>.wav, or the same recording in another audio format (wavs/<id>.opus)
        audio = resolve_audio(root / "wavs" / f"{utterance_id}.wav")
        fields = {"speaker": SPEAKER, "text": normalized_text}
        utterances.append(Utterance("all", utterance_id, str(audio), fields))
    if not utterances and not report.skipped:
        raise ValueError(f"ljspeech: {metadata} lists no utterances")
    return utterances


PREPARER = Preparer("ljspeech", collect, LAYOUT)
