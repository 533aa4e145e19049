"""LibriTTS: ``LibriTTS/<subset>/<speaker>/<chapter>/<speaker>_<chapter>_NNNNNN_NNNNNN.wav``.

Audio may be stored in any format ``common.audio_extensions()`` lists, not only ``.wav``.

Each wav has ``<stem>.normalized.txt`` (the text used here) and ``<stem>.original.txt``
beside it. One manifest per subset found; ``speaker`` and ``chapter`` come from the path,
``gender`` from ``SPEAKERS.txt`` when present.

Example:
    >>> import tempfile
    >>> from speechssl.testing import make_libritts_tree
    >>> from speechssl.data.prepare import prepare
    >>> summary = prepare("libritts", make_libritts_tree(tempfile.mkdtemp()), tempfile.mkdtemp())
    >>> sorted(summary["manifests"])
    ['dev-clean', 'train-clean-100']
"""

from __future__ import annotations

from pathlib import Path

from speechssl.data.prepare.common import (
    Preparer,
    Report,
    Utterance,
    audio_files,
    find_root,
    glob_files,
    try_read_text,
)
from speechssl.data.prepare.librispeech import read_speakers_file

LAYOUT = "LibriTTS/<subset>/<speaker>/<chapter>/<speaker>_<chapter>_NNNNNN_NNNNNN.wav"


def _subsets(root: Path, report: Report | None = None) -> list[Path]:
    """Sub-folders that hold ``<speaker>/<chapter>/*.wav``; folders that cannot be listed go
    to ``report`` (None: only probing the layout)."""
    return [
        child
        for child in glob_files(root, "*", report, kind="dir")
        if audio_files(child, "*/*/*", report)
    ]


def collect(src, report: Report) -> list[Utterance]:
    root = find_root(
        report,
        src,
        "libritts",
        ["LibriTTS"],
        lambda path: bool(_subsets(path)),
        f"no subset folder with <speaker>/<chapter>/*.wav under {Path(src).absolute()} "
        f"(expected {LAYOUT})",
    )
    speakers_file = next(
        (root / name for name in ("SPEAKERS.txt", "SPEAKERS.TXT") if (root / name).is_file()), None
    )
    genders = read_speakers_file(speakers_file, report) if speakers_file else {}
    utterances = []
    for subset in _subsets(root, report):
        # .wav as released, or any other audio format (the .txt files beside are not audio)
        for audio in audio_files(subset, "*/*/*"):  # unreadable folders: reported above
            chapter, speaker = audio.parent.name, audio.parent.parent.name
            text_path = audio.with_name(f"{audio.stem}.normalized.txt")
            if not text_path.is_file():
                report.skip(audio, "no-transcript", f"{text_path.name} not found")
                continue
            text, error = try_read_text(text_path)
            if text is None or not text.strip():
                report.skip(audio, "unreadable-transcript", error or f"{text_path.name} is empty")
                continue
            fields = {"speaker": speaker, "chapter": chapter, "text": text.strip()}
            if speaker in genders:
                fields["gender"] = genders[speaker]
            utterances.append(Utterance(subset.name, audio.stem, str(audio), fields))
    return utterances


PREPARER = Preparer("libritts", collect, LAYOUT)
