"""Writers of each corpus's real on-disk layout: one module per corpus.

The preparers (:mod:`speechssl.data.prepare`) read these layouts; these modules are the
one place that *writes* them: the paths of audio files and the exact bytes of their
transcripts, split lists, evaluation files and speaker tables. The test fabricators
(:mod:`speechssl.testing`) and the demo builders (``tools/make_demo_corpus.py``,
``tools/make_real_demo.py``) both write through them, so a fixture, the embedded demo and
the real release cannot drift apart. Audio itself is written by the caller (tones,
synthetic speech or real recordings, in any format); a writer returns the path to write
it to.

* :mod:`~speechssl.data.layouts.librispeech`: ``LibriSpeech/<subset>/<speaker>/<chapter>/``
* :mod:`~speechssl.data.layouts.voxceleb1`: ``VoxCeleb1/wav/<id>/<video>/NNNNN.wav`` + lists
* :mod:`~speechssl.data.layouts.iemocap`: ``IEMOCAP_full_release/Session<n>/...``
* :mod:`~speechssl.data.layouts.ljspeech`: ``LJSpeech-1.1/metadata.csv`` + ``wavs/``
* :mod:`~speechssl.data.layouts.libritts`: ``LibriTTS/<subset>/<speaker>/<chapter>/``
* :mod:`~speechssl.data.layouts.speech_commands`: ``SpeechCommands/<word>/<speaker>_nohash_<k>.wav`` + lists
* :mod:`~speechssl.data.layouts.vctk`: ``VCTK-Corpus-0.92/wav48_silence_trimmed/`` + ``txt/``
* :mod:`~speechssl.data.layouts.folder`: a user's ``<label>/<file>`` folder or ``path,label`` CSV
"""

from speechssl.data.layouts import (
    folder,
    iemocap,
    librispeech,
    libritts,
    ljspeech,
    speech_commands,
    vctk,
    voxceleb1,
)

__all__ = [
    "folder",
    "iemocap",
    "librispeech",
    "libritts",
    "ljspeech",
    "speech_commands",
    "vctk",
    "voxceleb1",
]
