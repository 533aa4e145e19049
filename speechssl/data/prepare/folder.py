"""A user folder with one sub-folder per class label: ``SRC/<label>/**/<file>.<wav|flac|ogg|mp3>``.

Writes ``all.jsonl`` with ``label`` = the sub-folder name and ``id`` = ``<label>/<path
without extension>``. MP3 is accepted only where the installed libsndfile reads it.
With ``labels``, sub-folders outside that set are skipped (``label-not-in-set``).

Example:
    >>> import tempfile, os
    >>> from speechssl.testing import write_tone
    >>> from speechssl.data.prepare import prepare
    >>> src = tempfile.mkdtemp()
    >>> _ = write_tone(os.path.join(src, "yes", "a.wav")), write_tone(os.path.join(src, "no", "b.wav"))
    >>> prepare("folder", src, tempfile.mkdtemp())["manifests"]["all"]["labels"]
    {'no': 1, 'yes': 1}
"""

from __future__ import annotations

from speechssl.data.prepare.common import (
    Preparer,
    Report,
    Utterance,
    audio_extensions,
    glob_files,
    resolve_path,
)

LAYOUT = "<folder>/<label>/<file>.wav (one sub-folder per class label)"


def collect(src, report: Report, labels: set[str] | None = None) -> list[Utterance]:
    root, error = resolve_path(src)
    if root is None:
        raise ValueError(f"folder: cannot resolve the source folder {src}: {error}")
    if not root.is_dir():
        raise ValueError(f"folder: source folder not found: {root}")
    extensions = audio_extensions()
    class_dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    for stray in sorted(
        p for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions
    ):
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


PREPARER = Preparer("folder", collect, LAYOUT, takes_labels=True)
