"""A user folder: one sub-folder per class label (``SRC/<label>/**/<file>.<wav|flac|ogg|mp3>``),
or unlabelled audio (pre-training data such as LibriLight).

Writes ``all.jsonl`` with ``label`` = the sub-folder name and ``id`` = ``<label>/<path
without extension>``. MP3 is accepted only where the installed libsndfile reads it.
With ``labels``, sub-folders outside that set are skipped (``label-not-in-set``).

Unlabelled (``unlabelled=True``, ``speechssl prepare folder --unlabelled``, or a folder
whose audio files all sit at its top level, with no class sub-folder): every audio file
under ``SRC``, at any depth, becomes a row without ``label``, ``id`` = its path without
extension. A LibriLight-style tree (``<speaker>/<book>/<file>.flac``) needs the flag,
since its sub-folders would otherwise read as classes.

Example:
    >>> import tempfile, os
    >>> from speechssl.testing import write_tone
    >>> from speechssl.data.prepare import prepare
    >>> src = tempfile.mkdtemp()
    >>> _ = write_tone(os.path.join(src, "yes", "a.wav")), write_tone(os.path.join(src, "no", "b.wav"))
    >>> prepare("folder", src, tempfile.mkdtemp())["manifests"]["all"]["labels"]
    {'no': 1, 'yes': 1}
    >>> entry = prepare("folder", src, tempfile.mkdtemp(), unlabelled=True)["manifests"]["all"]
    >>> entry["utterances"], "labels" in entry
    (2, False)
"""

from __future__ import annotations

import os

from speechssl.data.prepare.common import (
    Preparer,
    Report,
    Utterance,
    audio_extensions,
    glob_files,
    resolve_path,
)

LAYOUT = (
    "<folder>/<label>/<file>.wav (one sub-folder per class label), "
    "or <folder>/**/<file>.wav with --unlabelled"
)


def collect(
    src, report: Report, labels: set[str] | None = None, unlabelled: bool = False
) -> list[Utterance]:
    root, error = resolve_path(src)
    if root is None:
        raise ValueError(f"folder: cannot resolve the source folder {src}: {error}")
    if not root.is_dir():
        raise ValueError(f"folder: source folder not found: {root}")
    if unlabelled and labels is not None:
        raise ValueError("folder: --labels and --unlabelled exclude each other")
    extensions = audio_extensions()
    report.root = root
    class_dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    strays = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if unlabelled or (strays and labels is None and not _holds_audio(class_dirs, extensions)):
        return _unlabelled(root, report, extensions)
    for stray in strays:
        report.skip(stray, "not-in-class-folder", "audio files must sit in a <label>/ sub-folder")
    utterances = []
    for class_dir in class_dirs:
        label = class_dir.name
        # every sub-folder that cannot be listed is reported, not silently left out
        for audio in (
            p for p in glob_files(class_dir, "**/*", report) if p.suffix.lower() in extensions
        ):
            if labels is not None and label not in labels:
                report.skip(audio, "label-not-in-set", label)
                continue
            relative = audio.relative_to(root).with_suffix("").as_posix()
            utterances.append(Utterance("all", relative, str(audio), {"label": label}))
    if not utterances and not report.skipped:
        names = " ".join(extensions)
        raise ValueError(
            f"folder: no audio files ({names}) in sub-folders of {root} (expected {LAYOUT})"
        )
    return utterances


def _holds_audio(folders, extensions) -> bool:
    """Whether any of ``folders`` holds an audio file at any depth (stops at the first)."""
    for folder in folders:
        for _, _, names in os.walk(folder):
            if any(os.path.splitext(name)[1].lower() in extensions for name in names):
                return True
    return False


def _unlabelled(root, report: Report, extensions) -> list[Utterance]:
    """Every audio file under ``root`` (any depth), one row each, no label."""
    utterances = [
        Utterance("all", audio.relative_to(root).with_suffix("").as_posix(), str(audio))
        for audio in glob_files(root, "**/*", report)
        if audio.suffix.lower() in extensions
    ]
    if not utterances and not report.skipped:
        names = " ".join(extensions)
        raise ValueError(f"folder: no audio files ({names}) under {root}")
    report.extra["unlabelled"] = True
    return utterances


PREPARER = Preparer("folder", collect, LAYOUT, takes_labels=True)
