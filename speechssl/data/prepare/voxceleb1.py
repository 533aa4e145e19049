"""VoxCeleb1: ``VoxCeleb1/wav/<speaker>/<video>/NNNNN.wav`` + ``iden_split.txt`` + ``veri_test.txt``.

Writes ``train.jsonl`` / ``dev.jsonl`` / ``test.jsonl`` from the identification split
(codes 1 / 2 / 3), ``verification.jsonl`` with every utterance the trials use, and
``trials.txt`` (``label enroll_id test_id``, ids as in the manifests: ``id10001/1zcIwhmdeo4/00001``).
A trial whose audio is missing or unusable is left out and counted. The lists name
``.wav`` files, as the release does; a recording stored in another audio format under the
same stem (``00001.opus``, see ``common.resolve_audio``) stands in for it.

Example:
    >>> import tempfile
    >>> from speechssl.testing import make_voxceleb1_tree
    >>> from speechssl.data.prepare import prepare
    >>> summary = prepare("voxceleb1", make_voxceleb1_tree(tempfile.mkdtemp()), tempfile.mkdtemp())
    >>> sorted(summary["manifests"])
    ['dev', 'test', 'train', 'verification']
"""

from __future__ import annotations

import re
from pathlib import Path

from speechssl.data.prepare.common import (
    Preparer,
    Report,
    Utterance,
    find_root,
    read_text,
    resolve_audio,
    write_text_atomic,
)

LAYOUT = "VoxCeleb1/wav/idXXXXX/<video>/NNNNN.wav"
SPLIT_CODES = {"1": "train", "2": "dev", "3": "test"}
TRIAL_LABELS = ("0", "1")
# speaker id / 11-character YouTube video id / utterance number
_RELATIVE_PATH = re.compile(r"^(id\d+)/([A-Za-z0-9_-]{11})/(\d+)\.wav$")


def collect(src, report: Report) -> list[Utterance]:
    root = find_root(
        report,
        src,
        "voxceleb1",
        ["VoxCeleb1", "voxceleb1"],
        lambda path: (path / "wav").is_dir(),
        f"no wav/ folder under {Path(src).absolute()} (expected {LAYOUT})",
    )
    iden_split, veri_test = root / "iden_split.txt", root / "veri_test.txt"
    if not iden_split.is_file() and not veri_test.is_file():
        raise ValueError(
            f"voxceleb1: neither iden_split.txt nor veri_test.txt in {root} "
            "(expected VoxCeleb1/iden_split.txt with '1 id10001/1zcIwhmdeo4/00001.wav' lines)"
        )
    wav_dir = root / "wav"
    genders = _read_meta(root / "vox1_meta.csv", report)
    utterances = []
    if iden_split.is_file():
        # relative path -> (split, line) of its first line: a file listed again is left out
        # there, so no held-out audio lands in training through a repeated line
        first: dict[str, tuple[str, int]] = {}
        for line_number, fields in _read_lines(iden_split, report, 2):
            code, relative = fields
            match = _RELATIVE_PATH.match(relative)
            if code not in SPLIT_CODES or not match:
                _malformed(report, iden_split, line_number, fields)
                continue
            split = SPLIT_CODES[code]
            if relative in first:
                kept_split, kept_line = first[relative]
                reason = "duplicate-line" if kept_split == split else "conflicting-split"
                detail = f"line {line_number}: {relative} ({split}) is already in {kept_split} at line {kept_line}"
                report.skip(iden_split, reason, detail)
                continue
            first[relative] = (split, line_number)
            utterances.append(_utterance(split, wav_dir, relative, genders, {"split": split}))
    trials = []
    if veri_test.is_file():
        for line_number, fields in _read_lines(veri_test, report, 3):
            label, enroll, test = fields
            if label not in TRIAL_LABELS or not all(map(_RELATIVE_PATH.match, (enroll, test))):
                _malformed(report, veri_test, line_number, fields)
                continue
            trials.append((line_number, label, enroll[: -len(".wav")], test[: -len(".wav")]))
        # each utterance a trial uses, once, whether or not iden_split lists it
        used = sorted({relative for _, _, enroll, test in trials for relative in (enroll, test)})
        utterances += [_utterance("verification", wav_dir, f"{rel}.wav", genders) for rel in used]
        report.finalizers.append(
            lambda out, manifests: _write_trials(out, manifests, trials, veri_test, report)
        )
    return utterances


def _utterance(
    manifest: str, wav_dir: Path, relative: str, genders: dict, extra: dict | None = None
) -> Utterance:
    speaker = relative.split("/")[0]
    fields = {"speaker": speaker, **(extra or {})}
    if speaker in genders:
        fields["gender"] = genders[speaker]
    audio = resolve_audio(wav_dir / relative)
    return Utterance(manifest, relative[: -len(".wav")], str(audio), fields)


def _read_meta(path: Path, report: Report) -> dict[str, str]:
    """Speaker -> gender from ``vox1_meta.csv`` when present: a TAB-separated table with the
    header ``VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set`` and ``m`` / ``f`` genders."""
    if not path.is_file():
        return {}
    genders = {}
    for line in (read_text(path, report, "unreadable-metadata") or "").splitlines()[1:]:
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) >= 3 and fields[2].lower() in ("m", "f"):
            genders[fields[0]] = fields[2].upper()
    return genders


def _read_lines(path: Path, report: Report, num_fields: int):
    """Yield ``(line number, fields)`` of whitespace-separated lines with ``num_fields`` fields."""
    text = read_text(path, report, "unreadable-metadata")
    for line_number, line in enumerate((text or "").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != num_fields:
            _malformed(report, path, line_number, fields)
            continue
        yield line_number, fields


def _malformed(report: Report, path: Path, line_number: int, fields: list[str]) -> None:
    report.skip(path, "malformed-line", f"line {line_number}: {' '.join(fields)[:120]}")


def _write_trials(
    out: Path, manifests: dict, trials: list, veri_test: Path, report: Report
) -> None:
    """Write ``trials.txt`` with the trials whose two utterances survived verification."""
    kept = {row["id"] for row in manifests.get("verification", [])}
    lines = []
    for line_number, label, enroll, test in trials:
        if enroll in kept and test in kept:
            lines.append(f"{label} {enroll} {test}\n")
        else:
            absent = " ".join(utt for utt in (enroll, test) if utt not in kept)
            report.skip(veri_test, "trial-audio-unusable", f"line {line_number}: {absent}")
    write_text_atomic(out / "trials.txt", "".join(lines))
    written = len(lines)
    report.extra["trials"] = {"written": written, "skipped": len(trials) - written}


PREPARER = Preparer("voxceleb1", collect, LAYOUT)
