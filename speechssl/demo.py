"""Paths to the small demo corpus shipped inside the package.

``speechssl/demo_data`` holds corpora in the real on-disk layouts of LibriSpeech, IEMOCAP,
VoxCeleb1, LJSpeech, LibriTTS and Google Speech Commands (built by
``tools/make_demo_corpus.py``), so every recipe and test runs without downloads.
LibriSpeech, VoxCeleb1, LJSpeech, IEMOCAP and SpeechCommands hold real speech (LibriSpeech
and LJ Speech clips, EmoDB's acted emotions, FSDD's spoken digits, stored as Ogg
Opus/Vorbis; ``demo_data/NOTICE.md`` names the sources and licences); LibriTTS is espeak-ng
voices.

Example:
    >>> from speechssl.demo import demo_path
    >>> demo_path("iemocap").name
    'IEMOCAP_full_release'
    >>> (demo_path("ljspeech") / "metadata.csv").is_file()
    True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["CORPUS_DIRECTORIES", "demo_path", "demo_root"]

# Corpus name -> the folder its public release unpacks to.
CORPUS_DIRECTORIES = {
    "librispeech": "LibriSpeech",
    "iemocap": "IEMOCAP_full_release",
    "voxceleb1": "VoxCeleb1",
    "ljspeech": "LJSpeech-1.1",
    "libritts": "LibriTTS",
    "speech_commands": "SpeechCommands",
}


def demo_root() -> Path:
    """The installed ``speechssl/demo_data`` folder (editable or wheel install alike)."""
    # importlib.resources finds package data in any install; the package is a plain
    # directory on disk (not zipped), so the Traversable is a real filesystem path.
    root = Path(str(resources.files("speechssl") / "demo_data"))
    if not root.is_dir():
        raise FileNotFoundError(
            f"demo corpus not found at {root}; rebuild it with `python tools/make_demo_corpus.py`"
        )
    return root


def demo_path(corpus: str) -> Path:
    """Root folder of one demo corpus, e.g. ``demo_path("iemocap")`` -> ``.../IEMOCAP_full_release``.

    Raises:
        ValueError: for a name not in ``CORPUS_DIRECTORIES``.
    """
    key = corpus.lower()
    if key not in CORPUS_DIRECTORIES:
        known = ", ".join(sorted(CORPUS_DIRECTORIES))
        raise ValueError(f"unknown demo corpus {corpus!r}; expected one of: {known}")
    return demo_root() / CORPUS_DIRECTORIES[key]
