"""Machinery every corpus preparer shares: the utterance record, the skip report,
root discovery, audio verification and the written outputs.

A corpus module only *lists* what its layout promises (``collect``); this module checks
the audio, writes ``<manifest>.jsonl``, ``skipped.jsonl`` and ``summary.json``.

Example:
    >>> report = Report()
    >>> report.skip("/data/a.wav", "no-transcript", "a.txt not found")
    >>> report.skipped[0]["reason"]
    'no-transcript'
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile

from speechssl import audio
from speechssl.data.manifest import write_jsonl
from speechssl.progress_bar import progress_bar
from speechssl.safe_io import remove_orphaned_temporaries, write_text_atomic

# utterances shorter than this carry too little speech for any task here
MIN_DURATION_S = 0.1
# the report files beside the manifests (skipped.jsonl, summary.json, trials.txt): no split
# or subset may take these names, or its manifest would be overwritten by a report
REPORT_NAMES = ("skipped", "summary", "trials")
# a manifest name becomes a file name
_MANIFEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def audio_extensions() -> tuple[str, ...]:
    """Extensions of the audio files a layout may hold, as the installed libsndfile decodes them.

    Layouts whose release uses ``.wav`` or ``.flac`` also accept these, so a corpus may be
    stored compressed (the embedded demo keeps real speech as Ogg Opus under ``.opus``).
    """
    extensions = [".wav", ".flac", ".ogg"]
    if "OPUS" in soundfile.available_subtypes("OGG"):
        extensions.append(".opus")
    if "MP3" in soundfile.available_formats():
        extensions.append(".mp3")
    return tuple(extensions)


def audio_files(folder: Path, pattern: str, report: Report | None = None) -> list[Path]:
    """Sorted files matching ``pattern`` (a glob without extension, e.g. ``"*/*/*"``) whose
    extension is one of ``audio_extensions()``; folders that cannot be listed go to ``report``
    (see ``glob_files``).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.opus").write_bytes(b""), (folder / "a.txt").write_bytes(b"")
        >>> [path.name for path in audio_files(folder, "*")]
        ['a.opus']
    """
    extensions = audio_extensions()
    return [
        path for path in glob_files(folder, pattern, report) if path.suffix.lower() in extensions
    ]


def resolve_audio(path: Path) -> Path:
    """``path`` if it exists, else a sibling with the same stem and another audio extension.

    Metadata that names ``00001.wav`` (VoxCeleb1 lists, LJSpeech ids) then finds the same
    recording stored as ``00001.flac`` or ``00001.opus``; with none, ``path`` is returned
    and the audio check reports it missing.
    """
    if path.exists():
        return path
    for extension in audio_extensions():
        candidate = path.with_suffix(extension)
        if candidate.exists():
            return candidate
    return path


@dataclass
class Utterance:
    """One utterance a corpus layout lists, before its audio is checked.

    ``fields`` holds the optional manifest keys (``speaker``, ``label``, ``text``, ...).
    The same audio file may be listed in several manifests (VoxCeleb1 test + verification).
    """

    manifest: str
    id: str
    audio: str
    fields: dict = field(default_factory=dict)


class Report:
    """Collects skipped inputs and extra summary entries while a corpus is prepared."""

    def __init__(self) -> None:
        self.skipped: list[dict] = []
        self.extra: dict = {}
        self.root: Path | None = None  # the corpus root found, for the summary
        # run after verification with (out_dir, {manifest: kept rows}); VoxCeleb1 trials
        self.finalizers: list[Callable[[Path, dict[str, list[dict]]], None]] = []

    def skip(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.skipped.append({"path": os.fspath(path), "reason": reason, "detail": detail})


@dataclass(frozen=True)
class Preparer:
    """A corpus preparer: ``collect(src, report) -> list[Utterance]``.

    ``takes_labels``: ``collect`` also accepts ``labels`` (a user label set) — only the
    user corpora (folder, csv) have one; the fixed corpora define their own.
    """

    name: str
    collect: Callable[..., list[Utterance]]
    layout: str
    takes_labels: bool = False


def find_root(
    report: Report,
    src: str | os.PathLike,
    corpus: str,
    names: Iterable[str],
    is_root,
    expected: str,
) -> Path:
    """Return the corpus root: ``src`` itself or ``src/<name>`` for one of ``names``.

    ``is_root(path) -> bool`` recognises the root; ``expected`` is shown when neither fits.
    The root is also kept in ``report.root`` for the summary.
    """
    resolved, error = resolve_path(src)
    if resolved is None:
        raise ValueError(f"{corpus}: cannot resolve the source folder {src}: {error}")
    src = resolved
    if not src.is_dir():
        raise ValueError(f"{corpus}: source folder not found: {src}")
    candidates = [src] + [src / name for name in names]
    for candidate in candidates:
        if candidate.is_dir() and is_root(candidate):
            report.root = candidate
            return candidate
    raise ValueError(f"{corpus}: {expected}")


def resolve_path(path: str | os.PathLike) -> tuple[Path | None, str]:
    """``(absolute path with symlinks resolved, "")``, or ``(None, why)`` when it cannot be
    resolved (a symlink loop, an unreadable folder on the way)."""
    try:
        return Path(path).expanduser().resolve(), ""
    except (OSError, RuntimeError) as error:  # Python 3.11 raises RuntimeError on a loop
        return None, _first_line(error)


def glob_files(
    folder: str | os.PathLike, pattern: str, report: Report | None = None, kind: str = "file"
) -> list[Path]:
    """Sorted paths under ``folder`` matching ``pattern``, reporting what could not be read.

    ``pattern`` is ``/``-separated; each part matches one name with ``*`` / ``?`` / ``[...]``
    and ``**`` matches any number of folders (symlinked folders are not descended, so a
    link loop cannot recurse). ``kind``: ``"file"`` or ``"dir"`` for the last part. Unlike
    pathlib's ``glob``/``rglob``, which skip a folder they may not list without a word, each
    folder that cannot be listed is recorded in ``report`` as ``unreadable-folder`` (pass
    ``report=None`` only to probe a layout).

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "a" / "b").mkdir(parents=True), (root / "a" / "b" / "x.wav").write_bytes(b"")
        >>> [path.name for path in glob_files(root, "**/*.wav")]
        ['x.wav']
    """
    parts = pattern.split("/")
    found: list[Path] = []

    def entries_of(directory: str) -> list[os.DirEntry]:
        try:
            with os.scandir(directory) as listing:
                return sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            if report is not None:
                report.skip(directory, "unreadable-folder", _first_line(error))
            return []

    def is_kind(entry: os.DirEntry, wanted: str, follow: bool = True) -> bool:
        try:
            if wanted == "dir":
                return entry.is_dir(follow_symlinks=follow)
            return entry.is_file(follow_symlinks=follow)
        except OSError:  # e.g. a symlink loop: neither a file nor a folder
            return False

    def visit(directory: str, index: int, entries: list[os.DirEntry] | None = None) -> None:
        # each folder is listed once, so an unreadable one is reported once
        entries = entries_of(directory) if entries is None else entries
        part = parts[index]
        if part == "**":
            visit(directory, index + 1, entries)  # ** matches no folder too
            for entry in entries:
                if is_kind(entry, "dir", follow=False):
                    visit(entry.path, index)
            return
        last = index == len(parts) - 1
        for entry in entries:
            if not fnmatch.fnmatchcase(entry.name, part):
                continue
            if last:
                if is_kind(entry, kind):
                    found.append(Path(entry.path))
            elif is_kind(entry, "dir"):
                visit(entry.path, index + 1)

    visit(os.fspath(folder), 0)
    return sorted(found)


def try_read_text(path: Path) -> tuple[str | None, str]:
    """``(text, "")`` of a UTF-8 file, or ``(None, why)`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8"), ""
    except (OSError, UnicodeDecodeError) as error:
        return None, f"{path.name}: {_first_line(error)}"


def read_text(path: Path, report: Report, reason: str = "unreadable-transcript") -> str | None:
    """Read a UTF-8 text file; on failure record ``reason`` for ``path`` and return None."""
    text, error = try_read_text(path)
    if text is None:
        report.skip(path, reason, error)
    return text


# ---------------------------------------------------------------------------------------
# audio verification


@dataclass(frozen=True)
class AudioCheck:
    """Outcome of checking one file: header facts, or the reason it is unusable."""

    sample_rate: int = 0
    num_samples: int = 0
    reason: str = ""
    detail: str = ""


def check_audio(path: str, decode: bool = True) -> AudioCheck:
    """Check one audio file: header always, every sample when ``decode``.

    Reasons: ``missing``, ``empty``, ``unreadable``, ``truncated``, ``non-finite`` (from
    :mod:`speechssl.audio`), ``zero-length`` and ``too-short`` (< 100 ms).
    """
    try:
        header = audio.info(path)
        if decode:
            num_samples = int(audio.load(path, sample_rate=None).shape[0])
        else:
            num_samples = header.num_samples
    except audio.AudioError as error:
        return AudioCheck(reason=error.reason, detail=error.detail)
    except Exception as error:  # noqa: BLE001 -- a decoder failure speechssl.audio did not classify
        return AudioCheck(reason="unreadable", detail=_first_line(error))
    if num_samples == 0:
        return AudioCheck(header.sample_rate, 0, "zero-length", "no samples")
    duration = num_samples / header.sample_rate
    if duration < MIN_DURATION_S:
        detail = f"{duration * 1000:.0f} ms < {MIN_DURATION_S * 1000:.0f} ms"
        return AudioCheck(header.sample_rate, num_samples, "too-short", detail)
    return AudioCheck(header.sample_rate, num_samples)


def check_all(paths: list[str], decode: bool, workers: int | None = None) -> dict[str, AudioCheck]:
    """Check files in a thread pool (libsndfile releases the GIL) with a progress bar on stderr."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    results: dict[str, AudioCheck] = {}
    description = "decoding audio" if decode else "reading headers"
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        progress_bar(total=len(paths), desc=description, unit="file", leave=False) as progress,
    ):
        for path, check in zip(paths, pool.map(lambda p: check_audio(p, decode), paths)):
            results[path] = check
            progress.update(1)
    return results


# ---------------------------------------------------------------------------------------
# outputs


def write_outputs(
    corpus: str,
    source: Path,
    out: Path,
    utterances: list[Utterance],
    report: Report,
    verify: bool,
    workers: int | None = None,
) -> dict:
    """Verify audio, write manifests + ``skipped.jsonl`` + ``summary.json``; return the summary.

    Before any audio is read: manifest names are checked against :data:`REPORT_NAMES`, and
    an id listed twice in one manifest keeps its first row (the others are reported as
    ``duplicate-id``). After writing, manifests that an earlier preparation into ``out``
    wrote and this one does not are removed, so no stale split is read beside fresh ones.
    """
    check_manifest_names(corpus, {utterance.manifest for utterance in utterances})
    utterances = drop_duplicate_ids(utterances, report)
    out.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(out)  # what a killed earlier preparation was writing
    checks = check_all(sorted({utterance.audio for utterance in utterances}), verify, workers)
    manifests: dict[str, list[dict]] = {}
    reported: set[tuple[str, str]] = set()
    for utterance in utterances:
        rows = manifests.setdefault(utterance.manifest, [])
        check = checks[utterance.audio]
        if check.reason:
            # a file listed in two manifests is reported once
            if (utterance.audio, check.reason) not in reported:
                reported.add((utterance.audio, check.reason))
                report.skip(utterance.audio, check.reason, check.detail)
            continue
        row = {
            "id": utterance.id,
            "audio": utterance.audio,
            "duration": round(check.num_samples / check.sample_rate, 6),
            "sample_rate": check.sample_rate,
        }
        row.update(utterance.fields)
        rows.append(row)
    for name, rows in manifests.items():
        rows.sort(key=lambda row: row["id"])
        write_jsonl(out / f"{name}.jsonl", rows)
    for finalize in report.finalizers:
        finalize(out, manifests)
    write_jsonl(out / "skipped.jsonl", report.skipped)
    removed = remove_stale_outputs(out, set(manifests), "trials" in report.extra)
    if removed:
        report.extra["removed_stale"] = removed
    summary = {
        "corpus": corpus,
        "source": str(source),
        "out": str(out),
        "verified": verify,
        "manifests": {name: summarize(rows) for name, rows in sorted(manifests.items())},
        "skipped": dict(sorted(Counter(row["reason"] for row in report.skipped).items())),
        **report.extra,
    }
    write_text_atomic(
        out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    )
    return summary


def check_manifest_names(corpus: str, names: set[str]) -> None:
    """Raise ``ValueError`` (one line) for a manifest name that is reserved or no file name."""
    for name in sorted(names):
        if name.lower() in REPORT_NAMES:
            raise ValueError(
                f"{corpus}: a split or subset is named {name!r}; the names "
                f"{', '.join(REPORT_NAMES)} are kept for the report files, rename it"
            )
        if not _MANIFEST_NAME.match(name):
            raise ValueError(
                f"{corpus}: {name[:60]!r} cannot name a manifest file "
                "(use letters, digits, '.', '_', '-')"
            )


def drop_duplicate_ids(utterances: list[Utterance], report: Report) -> list[Utterance]:
    """The utterances without a repeated ``(manifest, id)``; the first is kept, each repeat
    is reported as ``duplicate-id`` (two rows with one id would leave one unaddressable)."""
    first: dict[tuple[str, str], str] = {}
    kept = []
    for utterance in utterances:
        key = (utterance.manifest, utterance.id)
        if key in first:
            detail = f"{utterance.manifest}: id {utterance.id} listed again; kept {first[key]}"
            report.skip(utterance.audio, "duplicate-id", detail)
            continue
        first[key] = utterance.audio
        kept.append(utterance)
    return kept


def remove_stale_outputs(out: Path, manifests: set[str], wrote_trials: bool) -> list[str]:
    """Delete the manifests (and ``trials.txt``) that the previous ``out/summary.json``
    lists and this preparation did not write; returns the removed file names. Files that
    no speechssl summary names are left alone."""
    try:
        previous = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    listed = previous.get("manifests") if isinstance(previous, dict) else None
    removed = []
    for name in listed if isinstance(listed, dict) else {}:
        if name in manifests or name.lower() in REPORT_NAMES or not _MANIFEST_NAME.match(name):
            continue
        if (out / f"{name}.jsonl").is_file():
            (out / f"{name}.jsonl").unlink()
            removed.append(f"{name}.jsonl")
    if "trials" in previous and not wrote_trials and (out / "trials.txt").is_file():
        (out / "trials.txt").unlink()
        removed.append("trials.txt")
    return sorted(removed)


def summarize(rows: list[dict]) -> dict:
    """Utterances, hours, distinct speakers and label counts of one manifest's rows."""
    entry = {
        "utterances": len(rows),
        "hours": round(sum(row["duration"] for row in rows) / 3600, 4),
        "speakers": len({row["speaker"] for row in rows if "speaker" in row}),
    }
    labels = Counter(row["label"] for row in rows if "label" in row)
    if labels:
        entry["labels"] = dict(sorted(labels.items()))
    return entry


def format_summary(summary: dict) -> str:
    """The summary as a few human-readable lines (printed by ``speechssl prepare``)."""
    lines = [f"{summary['corpus']}: {summary['source']} -> {summary['out']}"]
    for name, entry in summary["manifests"].items():
        line = f"  {name}.jsonl: {entry['utterances']} utterances, {entry['hours']:.4f} h"
        if entry["speakers"]:
            line += f", {entry['speakers']} speakers"
        if "labels" in entry:
            line += ", labels " + " ".join(f"{k}={v}" for k, v in entry["labels"].items())
        lines.append(line)
    if "trials" in summary:
        trials = summary["trials"]
        lines.append(f"  trials.txt: {trials['written']} trials ({trials['skipped']} skipped)")
    if "dropped_labels" in summary:
        dropped = summary["dropped_labels"]
        lines.append(
            "  dropped labels: " + (" ".join(f"{k}={v}" for k, v in dropped.items()) or "none")
        )
    if summary.get("removed_stale"):
        lines.append("  removed stale: " + " ".join(summary["removed_stale"]))
    skipped = summary["skipped"]
    lines.append("  skipped: " + (" ".join(f"{k}={v}" for k, v in skipped.items()) or "none"))
    return "\n".join(lines)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
