"""IEMOCAP: ``IEMOCAP_full_release/Session{1..5}/sentences/wav/<dialog>/<utterance>.wav``.

Labels come from ``Session*/dialog/EmoEvaluation/<dialog>.txt``: a ``%`` header line, then
per turn a TAB-separated summary line
``[6.2901 - 8.2357]\\tSes01F_impro01_F000\\tneu\\t[2.5000, 2.5000, 2.5000]``, evaluator lines
(``C-E2:\\tNeutral;\\t()``, ``A-E3:\\tval 3; ...``) and a blank line. The standard 4-class
protocol keeps neu / hap / ang / sad with exc merged into hap; every other label is dropped
and counted per label. Writes ``all.jsonl`` with ``label``, ``session`` (1..5), ``speaker``
(``Ses01M`` for ``Ses01F_impro01_M000``), ``gender`` and ``dialog_type`` (impro / script).

Example:
    >>> import tempfile
    >>> from speechssl.testing import make_iemocap_tree
    >>> from speechssl.data.prepare import prepare
    >>> summary = prepare("iemocap", make_iemocap_tree(tempfile.mkdtemp()), tempfile.mkdtemp())
    >>> sorted(summary["manifests"]["all"]["labels"])
    ['ang', 'hap', 'neu', 'sad']
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from speechssl.data.prepare.common import (
    Preparer,
    Report,
    Utterance,
    find_root,
    glob_files,
    read_text,
    resolve_audio,
)

LAYOUT = "IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
# 4-class protocol: exc is merged into hap
LABEL_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
ALL_LABELS = ("neu", "hap", "ang", "sad", "exc", "fru", "fea", "sur", "dis", "oth", "xxx")
# [start - end] <TAB> utterance <TAB> label <TAB> [valence, activation, dominance]
_SUMMARY_LINE = re.compile(
    r"^\[(?P<start>\d+(?:\.\d+)?) - (?P<end>\d+(?:\.\d+)?)\]\t(?P<utterance>\S+)\t"
    r"(?P<label>\S+)\t\[[^\]]*\]\s*$"
)
# Ses01F_impro01_M000, Ses01F_script01_1_F000, Ses05M_script01_1b_F012
_UTTERANCE = re.compile(
    r"^Ses(?P<session>0[1-5])[FM]_(?P<dialog_type>impro|script)\w*_(?P<gender>[FM])\d+$"
)


def _is_root(path: Path) -> bool:
    return any((path / f"Session{session}").is_dir() for session in range(1, 6))


def collect(src, report: Report) -> list[Utterance]:
    root = find_root(
        report,
        src,
        "iemocap",
        ["IEMOCAP_full_release", "IEMOCAP"],
        _is_root,
        f"no Session1..Session5 folder under {Path(src).absolute()} (expected {LAYOUT})",
    )
    dropped: Counter = Counter()
    utterances = []
    for session in range(1, 6):
        session_dir = root / f"Session{session}"
        if not session_dir.is_dir():
            continue
        evaluation_dir = session_dir / "dialog" / "EmoEvaluation"
        # only the top-level files: the release also has Categorical/, Attribute/, ... folders,
        # and macOS "._" resource files beside the real ones
        evaluations = [
            p for p in glob_files(evaluation_dir, "*.txt", report) if not p.name.startswith("._")
        ]
        if not evaluations:
            raise ValueError(
                f"iemocap: no EmoEvaluation/*.txt in {evaluation_dir} "
                "(expected Session1/dialog/EmoEvaluation/Ses01F_impro01.txt)"
            )
        for evaluation in evaluations:
            for utterance, label in _read_evaluation(evaluation, report):
                match = _UTTERANCE.match(utterance)
                dialog = utterance.rsplit("_", 1)[0]
                # the release's .wav, or the same stem compressed (the demo keeps Ogg Opus)
                audio = resolve_audio(
                    session_dir / "sentences" / "wav" / dialog / f"{utterance}.wav"
                )
                if not match or int(match["session"]) != session:
                    report.skip(
                        evaluation, "malformed-line", f"unexpected utterance name {utterance}"
                    )
                    continue
                if label not in LABEL_MAP:
                    dropped[label] += 1
                    report.skip(audio, "label-not-in-set", label)
                    continue
                gender = match["gender"]
                fields = {
                    "label": LABEL_MAP[label],
                    "session": session,
                    "speaker": f"Ses{match['session']}{gender}",
                    "gender": gender,
                    "dialog_type": match["dialog_type"],
                }
                utterances.append(Utterance("all", utterance, str(audio), fields))
    report.extra["dropped_labels"] = dict(sorted(dropped.items()))
    if not utterances and not report.skipped:
        raise ValueError(f"iemocap: no labelled utterances under {root} (expected {LAYOUT})")
    return utterances


def _read_evaluation(path: Path, report: Report):
    """Yield ``(utterance, label)`` from the summary lines of one EmoEvaluation file."""
    text = read_text(path, report, "unreadable-metadata")
    for line_number, line in enumerate((text or "").splitlines(), 1):
        # header "%...", evaluator lines "C-E2:..." / "A-E3:..." and blank lines carry no label
        if not line.startswith("["):
            continue
        match = _SUMMARY_LINE.match(line)
        if not match:
            report.skip(path, "malformed-line", f"line {line_number}: {line.strip()[:120]}")
            continue
        yield match["utterance"], match["label"]


PREPARER = Preparer("iemocap", collect, LAYOUT)
