"""IEMOCAP: ``IEMOCAP_full_release/Session<n>/sentences/wav/<dialog>/<utterance>.wav``.

Each dialog has an evaluation file ``Session<n>/dialog/EmoEvaluation/<dialog>.txt``: a
``%`` header and a blank line, then per turn a TAB-separated summary line
``[START - END]\\t<utterance>\\t<emotion>\\t[V, A, D]``, categorical evaluator lines
(``C-E2:\\tNeutral;\\t()``), dimensional ones (``A-E1:\\tval 3; act 2; dom  2;\\t()``) and
a blank line; ``dialog/transcriptions/<dialog>.txt`` holds
``<utterance> [SSS.SSSS-EEE.EEEE]: text`` lines. Read by
:mod:`speechssl.data.prepare.iemocap` (the summary lines are the labels).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> corpus = Path(tempfile.mkdtemp()) / "IEMOCAP_full_release"
    >>> turn = turn_lines("Ses01F_impro01_F000", "neu", 2.0, 3.5, (2.5, 2.5, 2.5),
    ...                   [("C-E2", ["Neutral"], "")], [("A-E1", (3, 2, 2))])
    >>> turn
    ['[2.0000 - 3.5000]\\tSes01F_impro01_F000\\tneu\\t[2.5000, 2.5000, 2.5000]', 'C-E2:\\tNeutral;\\t()', 'A-E1:\\tval 3; act 2; dom  2;\\t()', '']
    >>> path = write_evaluation(corpus, 1, "Ses01F_impro01", [turn])
    >>> path.relative_to(corpus).as_posix(), path.read_text().splitlines()[:2]
    ('Session1/dialog/EmoEvaluation/Ses01F_impro01.txt', ['% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]', ''])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from speechssl.data.layouts._text import write_lines

__all__ = [
    "CATEGORY_NAMES",
    "EVALUATION_HEADER",
    "FOLDER",
    "audio_path",
    "turn_lines",
    "write_categorical_file",
    "write_evaluation",
    "write_transcription",
]

FOLDER = "IEMOCAP_full_release"
EVALUATION_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
# label -> the name evaluators write in the categorical lines
CATEGORY_NAMES = {
    "neu": "Neutral",
    "hap": "Happiness",
    "exc": "Excited",
    "ang": "Anger",
    "sad": "Sadness",
    "fru": "Frustration",
    "sur": "Surprise",
}


def _dialog_dir(corpus: str | os.PathLike, session: int) -> Path:
    return Path(corpus) / f"Session{session}" / "dialog"


def audio_path(corpus: str | os.PathLike, session: int, dialog: str, utterance: str) -> Path:
    """``corpus/Session<n>/sentences/wav/<dialog>/<utterance>.wav``."""
    return Path(corpus) / f"Session{session}" / "sentences" / "wav" / dialog / f"{utterance}.wav"


def turn_lines(
    utterance: str,
    emotion: str,
    start: float,
    end: float,
    vad: Sequence[float],
    categorical: Iterable[tuple[str, Sequence[str], str]],
    dimensional: Iterable[tuple[str, Sequence[int]]],
) -> list[str]:
    """One turn of an evaluation file: the summary line, then each evaluator's lines.

    Args:
        utterance, emotion: the turn's name and majority label (``neu``, ``xxx``, ...).
        start, end: the turn's times in the dialog, in seconds.
        vad: mean valence, activation, dominance (1..5).
        categorical: ``(evaluator, categories, comment)``, e.g. ``("C-E3", ["Anger",
            "Other"], "tense")``.
        dimensional: ``(evaluator, (valence, activation, dominance))`` integer scores.

    Returns:
        The lines, ending with the blank line that separates turns.
    """
    valence, activation, dominance = vad
    summary = (
        f"[{start:.4f} - {end:.4f}]\t{utterance}\t{emotion}\t"
        f"[{valence:.4f}, {activation:.4f}, {dominance:.4f}]"
    )
    lines = [summary]
    lines += [
        f"{evaluator}:\t{'; '.join(categories)};\t({comment})"
        for evaluator, categories, comment in categorical
    ]
    lines += [
        f"{evaluator}:\tval {scores[0]}; act {scores[1]}; dom  {scores[2]};\t()"
        for evaluator, scores in dimensional
    ]
    return [*lines, ""]


def write_evaluation(
    corpus: str | os.PathLike, session: int, dialog: str, turns: Iterable[Sequence[str]]
) -> Path:
    """``Session<n>/dialog/EmoEvaluation/<dialog>.txt``: the header, a blank line, the
    :func:`turn_lines` of every turn."""
    lines = [EVALUATION_HEADER, ""] + [line for turn in turns for line in turn]
    return write_lines(_dialog_dir(corpus, session) / "EmoEvaluation" / f"{dialog}.txt", lines)


def write_transcription(
    corpus: str | os.PathLike,
    session: int,
    dialog: str,
    turns: Iterable[tuple[str, float, float, str]],
) -> Path:
    """``Session<n>/dialog/transcriptions/<dialog>.txt`` from ``(utterance, start, end, text)``."""
    return write_lines(
        _dialog_dir(corpus, session) / "transcriptions" / f"{dialog}.txt",
        (f"{name} [{start:08.4f}-{end:08.4f}]: {text}" for name, start, end, text in turns),
    )


def write_categorical_file(
    corpus: str | os.PathLike,
    session: int,
    dialog: str,
    evaluator: str,
    turns: Iterable[tuple[str, str]],
) -> Path:
    """One evaluator's ``EmoEvaluation/Categorical/<dialog>_<evaluator>_cat.txt`` from
    ``(utterance, category)`` pairs (not a label source: the preparer must skip it)."""
    folder = _dialog_dir(corpus, session) / "EmoEvaluation" / "Categorical"
    return write_lines(
        folder / f"{dialog}_{evaluator}_cat.txt",
        (f"{name} :{category}; ()" for name, category in turns),
    )
