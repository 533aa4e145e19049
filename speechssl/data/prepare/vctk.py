"""VCTK 0.92: ``VCTK-Corpus-0.92/wav48_silence_trimmed/p225/p225_001_mic1.flac`` + ``txt/p225/p225_001.txt``.

Only microphone 1 is used (mic2 files are ignored). An utterance without a transcript
(all of p315 in the release) is skipped with reason ``no-transcript``. ``gender`` comes
from ``speaker-info.txt`` when present. Writes ``all.jsonl``.

Example:
    >>> import tempfile
    >>> from speechssl.testing import make_vctk_tree
    >>> from speechssl.data.prepare import prepare
    >>> summary = prepare("vctk", make_vctk_tree(tempfile.mkdtemp()), tempfile.mkdtemp())
    >>> summary["manifests"]["all"]["speakers"]
    2
"""

from __future__ import annotations

from pathlib import Path

from speechssl.data.prepare.common import (
    Preparer,
    Report,
    Utterance,
    find_root,
    glob_files,
    read_text,
    try_read_text,
)

LAYOUT = "VCTK-Corpus-0.92/wav48_silence_trimmed/p225/p225_001_mic1.flac + txt/p225/p225_001.txt"
MICROPHONE_SUFFIX = "_mic1"


def collect(src, report: Report) -> list[Utterance]:
    root = find_root(
        report,
        src,
        "vctk",
        ["VCTK-Corpus-0.92"],
        lambda path: (path / "wav48_silence_trimmed").is_dir() and (path / "txt").is_dir(),
        f"no wav48_silence_trimmed/ + txt/ under {Path(src).absolute()} (expected {LAYOUT})",
    )
    genders = _read_speaker_info(root / "speaker-info.txt", report)
    utterances = []
    wav_dir = root / "wav48_silence_trimmed"
    for audio in glob_files(wav_dir, f"*/*{MICROPHONE_SUFFIX}.flac", report):
        speaker = audio.parent.name
        utterance_id = audio.stem[: -len(MICROPHONE_SUFFIX)]
        text_path = root / "txt" / speaker / f"{utterance_id}.txt"
        if not text_path.is_file():
            report.skip(audio, "no-transcript", f"txt/{speaker}/{text_path.name} not found")
            continue
        text, error = try_read_text(text_path)
        if text is None or not text.strip():
            report.skip(audio, "unreadable-transcript", error or f"{text_path.name} is empty")
            continue
        fields = {"speaker": speaker, "text": text.strip()}
        if speaker in genders:
            fields["gender"] = genders[speaker]
        utterances.append(Utterance("all", utterance_id, str(audio), fields))
    if not utterances and not report.skipped:
        raise ValueError(
            f"vctk: no *{MICROPHONE_SUFFIX}.flac files under {root} (expected {LAYOUT})"
        )
    return utterances


def _read_speaker_info(path: Path, report: Report) -> dict[str, str]:
    """``speaker-info.txt``: a header "ID AGE GENDER ACCENTS REGION COMMENTS", then
    whitespace-aligned rows such as ``p225  23  F    English    Southern  England``."""
    if not path.is_file():
        return {}
    genders = {}
    for line in (read_text(path, report, "unreadable-metadata") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2] in ("F", "M"):
            # ids are "p225" in the wav folders; some releases write "225" here
            speaker = fields[0] if fields[0].startswith(("p", "s")) else f"p{fields[0]}"
            genders[speaker] = fields[2]
    return genders


PREPARER = Preparer("vctk", collect, LAYOUT)
