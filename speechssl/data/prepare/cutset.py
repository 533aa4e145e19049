"""A lhotse CutSet (``cuts.jsonl.gz``): recordings and supervisions, as lhotse recipes
write them (LibriSpeech, VoxCeleb, IEMOCAP, LJSpeech, LibriTTS, VCTK, ...).

Each cut becomes one row: ``id`` is the cut id, ``audio`` its recording's file; its first
supervision gives ``speaker``, ``text``, ``gender`` and the emotion (``custom["emotion"]``,
as lhotse's IEMOCAP recipe stores it) as ``label``. Rows go to one manifest named after the
file (``librispeech_cuts_train-clean-100.jsonl.gz`` -> ``librispeech_cuts_train-clean-100.jsonl``).
A manifest row is a whole file, so a cut that is only part of its recording (an offset,
a shorter duration) is skipped as ``partial-recording``, and a recording that is not one
local file (a URL, bytes in memory, a command) as ``unsupported-source``: both counted in
the summary, never dropped without a word. Needs lhotse (``pip install 'speechssl[shards]'``).

Example:
    >>> import tempfile, os
    >>> from speechssl.testing import write_tone
    >>> from lhotse import CutSet, Recording, SupervisionSegment
    >>> folder = tempfile.mkdtemp()
    >>> recording = Recording.from_file(str(write_tone(os.path.join(folder, "a.wav"), 1.0)))
    >>> cut = recording.to_cut()
    >>> cut.supervisions = [SupervisionSegment("a", "a", 0, 1.0, speaker="s1", text="hi",
    ...                                         custom={"emotion": "neu"})]
    >>> CutSet.from_cuts([cut]).to_file(os.path.join(folder, "cuts.jsonl.gz"))
    >>> from speechssl.data.prepare import prepare
    >>> summary = prepare("lhotse", os.path.join(folder, "cuts.jsonl.gz"), folder + "/out")
    >>> summary["manifests"]["cuts"]["labels"]
    {'neu': 1}
"""

from __future__ import annotations

import re
from pathlib import Path

from speechssl.data.prepare.common import Preparer, Report, Utterance, resolve_path

LAYOUT = "a lhotse CutSet file (cuts.jsonl.gz / .jsonl) whose recordings are local files"
# a cut is the whole recording when it starts at 0 and lasts as long, to this tolerance
_WHOLE_TOLERANCE_S = 1e-3
_MANIFEST_NAME = re.compile(r"[^A-Za-z0-9._-]")


def collect(src, report: Report) -> list[Utterance]:
    # optional dependency: only CutSet users need lhotse
    try:
        import lhotse
    except ImportError:
        raise ValueError(
            "lhotse: reading a CutSet needs lhotse: pip install 'speechssl[shards]'"
        ) from None
    path, error = resolve_path(src)
    if path is None or not path.is_file():
        raise ValueError(f"lhotse: SRC must be a CutSet file, got {src} ({error or 'not a file'})")
    try:
        cuts = list(lhotse.load_manifest_lazy(path) or [])
    except Exception as error:  # noqa: BLE001 -- lhotse's parse errors vary
        raise ValueError(f"lhotse: cannot read {path} as a CutSet: {error}") from None
    report.root = path
    name = _MANIFEST_NAME.sub("_", path.name.split(".jsonl")[0].split(".json")[0]) or "all"
    utterances = []
    for cut in cuts:
        recording = getattr(cut, "recording", None)
        if recording is None:
            report.skip(str(path), "no-recording", f"cut {cut.id} has no recording")
            continue
        sources = recording.sources
        if len(sources) != 1 or sources[0].type != "file":
            kinds = ",".join(source.type for source in sources)
            report.skip(recording.id, "unsupported-source", f"cut {cut.id}: {kinds}")
            continue
        audio = Path(sources[0].source)
        audio = audio if audio.is_absolute() else path.parent / audio
        whole = abs(cut.start) < _WHOLE_TOLERANCE_S and (
            abs(cut.duration - recording.duration) < _WHOLE_TOLERANCE_S
        )
        if not whole:
            report.skip(
                str(audio),
                "partial-recording",
                f"cut {cut.id}: {cut.start:.2f}+{cut.duration:.2f} s of {recording.duration:.2f} s",
            )
            continue
        meta = cut_metadata(cut)
        fields = {key: meta[key] for key in ("speaker", "text", "gender", "label") if key in meta}
        utterances.append(Utterance(name, cut.id, str(audio.resolve()), fields))
    if not utterances and not report.skipped:
        raise ValueError(f"lhotse: {path} holds no cuts")
    return utterances


def cut_metadata(cut) -> dict:
    """Manifest fields of a lhotse cut: id, duration, sample_rate, and the first
    supervision's speaker, text, gender and emotion (as ``label``) where present."""
    meta = {"id": cut.id, "duration": float(cut.duration), "sample_rate": cut.sampling_rate}
    if cut.supervisions:
        supervision = cut.supervisions[0]
        custom = supervision.custom or {}
        for key, value in (
            ("speaker", supervision.speaker),
            ("text", supervision.text),
            ("gender", supervision.gender),
            ("label", custom.get("emotion")),
        ):
            if value is not None:
                meta[key] = value
    return meta


PREPARER = Preparer("lhotse", collect, LAYOUT)
