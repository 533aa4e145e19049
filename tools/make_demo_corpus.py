"""Build the demo corpus shipped in ``speechssl/demo_data``.

Every corpus is written in the real on-disk layout of its public release (see
/work/shared/CORPORA.md), so ``speechssl prepare`` reads the demo exactly as it reads
the real thing.

Real human speech (``tools/make_real_demo.py``; sources and licences in
``speechssl/demo_data/NOTICE.md``):

* ``LibriSpeech/``            LibriSpeech readers, 16 kHz Ogg Opus, unlabelled (no trans.txt)
* ``VoxCeleb1/``              100 LibriSpeech readers in the VoxCeleb1 layout, 16 kHz Ogg Opus,
                              iden_split.txt and veri_test.txt
* ``LJSpeech-1.1/``           LJ Speech clips, 22,050 Hz Ogg Vorbis, the release's metadata
* ``IEMOCAP_full_release/``   EmoDB's acted neu/hap/ang/sad takes (10 German speakers,
                              5 sessions x (F, M)), 16 kHz Ogg Opus, EmoEvaluation labels
* ``SpeechCommands/``         FSDD's spoken digits (6 speakers) in the Google Speech Commands
                              layout, 16 kHz Ogg Opus, speaker-disjoint split lists

Synthetic speech, where no permissively licensed corpus could be found (a LibriTTS pool
with transcripts), from espeak-ng (voice + variant per speaker, with pitch, speed,
amplitude, word gap and pitch range varied) and sox (resampling); numpy adds noise and
gain. Everything is seeded, so two runs with the same ``--seed`` write the same samples:

* ``LibriTTS/``               24 kHz WAV, six voices reading diverse text
* ``ood_sentences.txt``       out-of-domain sentences for the TTS text-similarity study

Requires the ``espeak-ng`` and ``sox`` programs (``apt-get install -y espeak-ng sox``) and
the fetched source repositories (``--mirror``); users of the committed corpus need none.

Example:
    python tools/make_demo_corpus.py --out speechssl/demo_data --seed 0
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import librosa
import make_real_demo  # tools/make_real_demo.py, beside this script
import numpy as np
import soundfile

from speechssl.data.layouts import libritts

ESPEAK_RATE = 22050

# ---------------------------------------------------------------------------------------
# Text: a small template grammar; every sentence is original, nothing is copyrighted.
# ---------------------------------------------------------------------------------------

ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_to_words(number: int) -> str:
    """Spell out 0..99, e.g. ``42 -> "forty-two"``."""
    if number < 20:
        return ONES[number]
    tens, ones = divmod(number, 10)
    return TENS[tens] + ("" if ones == 0 else "-" + ONES[ones])


class TextMaker:
    """Draws sentences from topic vocabularies with a seeded generator."""

    PEOPLE = (
        "Anna",
        "Ben",
        "Clara",
        "David",
        "Elena",
        "Frank",
        "Grace",
        "Henry",
        "Iris",
        "Jack",
        "Laura",
        "Martin",
        "Nora",
        "Oscar",
    )
    THINGS = (
        "ticket",
        "letter",
        "phone",
        "jacket",
        "wallet",
        "keys",
        "car",
        "money",
        "camera",
        "bag",
        "report",
    )
    ACTIONS = (
        "call them",
        "go home",
        "fix it",
        "wait here",
        "leave now",
        "talk later",
        "sign it",
        "tell her",
    )

    ADJECTIVES = (
        "quiet",
        "bright",
        "narrow",
        "ancient",
        "silver",
        "heavy",
        "gentle",
        "crowded",
        "distant",
        "golden",
        "sudden",
        "patient",
        "broken",
        "tiny",
        "curious",
        "busy",
    )
    NOUNS = (
        "river",
        "garden",
        "village",
        "teacher",
        "farmer",
        "sailor",
        "lantern",
        "market",
        "window",
        "mountain",
        "bridge",
        "kitchen",
        "orchard",
        "painter",
        "island",
        "meadow",
        "harbour",
        "library",
    )
    VERBS = (
        "waited",
        "wandered",
        "rested",
        "listened",
        "worked",
        "sang",
        "watched",
        "followed",
        "settled",
        "gathered",
    )
    PLACES = (
        "hill",
        "shore",
        "station",
        "forest",
        "square",
        "valley",
        "cottage",
        "tower",
        "field",
        "road",
    )
    WHEN = (
        "at dawn",
        "after supper",
        "in the spring",
        "before the storm",
        "all morning",
        "by candlelight",
    )

    CITIES = ("London", "Bristol", "York", "Oxford", "Norwich", "Bath")
    MATERIALS = ("metal", "wooden", "brass", "lead")
    OFFICIALS = ("keeper", "sheriff", "chaplain", "governor", "inspector")
    PRISON_PLACES = ("cells", "yard", "gate", "chapel", "wards")
    SURNAMES = ("Smith", "Howard", "Baker", "Fuller", "Cotton", "Walker")

    OOD = (
        "Preheat the oven and whisk the eggs with a pinch of salt.",
        "The striker curled the ball into the top corner of the net.",
        "Restart the router before you update the firmware.",
        "Our spacecraft will orbit the icy moon for three months.",
        "Add the garlic once the onions turn soft and golden.",
        "The goalkeeper saved a penalty in the final minute.",
        "Compile the kernel module and reboot the virtual machine.",
        "The telescope captured a faint galaxy behind the nebula.",
        "Stir the risotto slowly while adding warm stock.",
        "The app syncs your playlists across every device.",
        "A coral reef shelters thousands of colourful fish.",
        "Swipe left to dismiss the notification banner.",
        "Charge the phone overnight and back up your photos to the cloud.",
        "The midfielder passed the ball back to the defender.",
        "Knead the dough for ten minutes, then let it rise.",
        "The rover drilled into the red dust of the crater.",
        "Mute your microphone when you join the video call.",
        "The sprinter crossed the finish line in record time.",
        "Slice the mango and sprinkle it with lime and chilli.",
        "Astronauts float in the cabin while the station circles the planet.",
        "Scan the barcode to pay with your smartphone.",
        "Dolphins leapt beside the surfboard near the beach.",
        "Drag the file into the folder and press save.",
        "The referee showed a yellow card after the tackle.",
    )

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def narrative(self) -> str:
        """Three to six words of story-like prose (LibriSpeech, LibriTTS)."""
        templates = [
            lambda: (
                f"The {self.pick(self.ADJECTIVES)} {self.pick(self.NOUNS)} {self.pick(self.VERBS)}."
            ),
            lambda: f"A {self.pick(self.NOUNS)} {self.pick(self.VERBS)} {self.pick(self.WHEN)}.",
            lambda: (
                f"{self.pick(self.PEOPLE)} {self.pick(self.VERBS)} by the {self.pick(self.PLACES)}."
            ),
        ]
        return templates[int(self.rng.integers(len(templates)))]()

    def diverse(self) -> tuple[str, str]:
        """LibriTTS style ``(original, normalised)``: narrative text, sometimes with a number."""
        if self.rng.random() < 0.25:
            count = int(self.rng.integers(2, 30))
            template = f"{self.pick(self.PEOPLE)} waited {{}} days."
            return template.format(count), template.format(number_to_words(count))
        sentence = self.narrative()
        return sentence, sentence


def unique_texts(draw, count: int, max_tries: int = 50) -> list:
    """``count`` draws of ``draw()``, avoiding repeats while the grammar allows it."""
    seen, texts = set(), []
    for _ in range(count):
        for _ in range(max_tries):
            text = draw()
            if text not in seen:
                break
        seen.add(text)
        texts.append(text)
    return texts


# ---------------------------------------------------------------------------------------
# Voices and synthesis
# ---------------------------------------------------------------------------------------

ACCENTS = ["en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan"]
FEMALE_VARIANTS = [
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "Alicia",
    "Andrea",
    "Annie",
    "belinda",
    "linda",
    "steph",
    "anika",
]
MALE_VARIANTS = [
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "adam",
    "Alex",
    "Andy",
    "boris",
    "caleb",
    "david",
    "ed",
    "john",
    "max",
    "paul",
]


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: espeak voice spec plus its habitual prosody."""

    spec: str  # espeak-ng "-v" argument, accent+variant
    gender: str  # "F" or "M"
    pitch: float  # espeak "-p", 0..99
    speed: float  # espeak "-s", words per minute
    pitch_range: float  # SSML prosody range in percent, 50 = espeak default
    word_gap: int  # espeak "-g", in units of 10 ms


@dataclass(frozen=True)
class Rendering:
    """Per-utterance prosody and post-processing."""

    pitch: float
    speed: float
    pitch_range: float
    word_gap: int
    amplitude: float = 100.0  # espeak "-a", 0..200
    sox_effects: tuple[str, ...] = ()
    gain_db: float = 0.0
    noise_db: float | None = None  # white-noise level in dBFS (RMS), None = no noise


def make_voices(rng: np.random.Generator, gender: str, count: int) -> list[Voice]:
    """``count`` distinct voices of one gender: no accent+variant pair repeats."""
    variants = FEMALE_VARIANTS if gender == "F" else MALE_VARIANTS
    pairs = [(accent, variant) for accent in ACCENTS for variant in variants]
    order = rng.permutation(len(pairs))
    voices = []
    used_variants: set[str] = set()
    # Prefer unused variants first so voices differ in timbre, not only in accent.
    for index in list(order) + list(order):
        accent, variant = pairs[index]
        if variant in used_variants and len(used_variants) < len(variants):
            continue
        used_variants.add(variant)
        voices.append(
            Voice(
                spec=f"{accent}+{variant}",
                gender=gender,
                pitch=float(rng.uniform(30, 70)),
                speed=float(rng.uniform(180, 215)),
                pitch_range=float(rng.uniform(35, 65)),
                word_gap=int(rng.integers(0, 3)),
            )
        )
        pairs[index] = ("", "")  # never reuse the same pair
        if len(voices) == count:
            return voices
    raise ValueError(f"cannot make {count} distinct {gender} voices")


def neutral_rendering(voice: Voice, rng: np.random.Generator, jitter: float = 1.0) -> Rendering:
    """The speaker's habitual prosody with small natural variation."""
    return Rendering(
        pitch=voice.pitch + rng.normal(0, 3 * jitter),
        speed=voice.speed * float(np.exp(rng.normal(0, 0.04 * jitter))),
        pitch_range=voice.pitch_range + rng.normal(0, 6 * jitter),
        word_gap=voice.word_gap,
        amplitude=100 * float(np.exp(rng.normal(0, 0.08 * jitter))),
    )


def synthesize(
    text: str, voice: Voice, rendering: Rendering, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """espeak-ng -> sox effects + resampling -> trim -> gain/noise; returns float32 ``(T,)``."""
    ssml = f'<speak><prosody range="{rendering.pitch_range:.0f}%">{escape(text)}</prosody></speak>'
    with tempfile.TemporaryDirectory() as folder:
        raw_path = Path(folder) / "espeak.wav"
        subprocess.run(
            [
                "espeak-ng", "-m", "-v", voice.spec,
                "-p", str(int(np.clip(round(rendering.pitch), 0, 99))),
                "-s", str(int(np.clip(round(rendering.speed), 80, 400))),
                "-a", str(int(np.clip(round(rendering.amplitude), 10, 200))),
                "-g", str(max(0, rendering.word_gap)),
                "-w", str(raw_path), ssml,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        # -R: sox's "repeatable" mode, so dither/noise inside effects is deterministic.
        command = ["sox", "-R", str(raw_path), "-t", "wav", "-e", "floating-point", "-b", "32", "-"]
        command += [*rendering.sox_effects, "rate", "-v", str(sample_rate)]
        result = subprocess.run(command, check=True, capture_output=True)
    wav, _ = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    # librosa's trim drops leading/trailing silence; keep 40 ms margins like a real segmenter.
    _, (start, end) = librosa.effects.trim(wav, top_db=30, frame_length=512, hop_length=128)
    margin = int(0.03 * sample_rate)
    wav = wav[max(0, start - margin) : end + margin]
    wav = wav * 10 ** (rendering.gain_db / 20)
    if rendering.noise_db is not None:
        wav = wav + rng.normal(0, 10 ** (rendering.noise_db / 20), wav.shape)
    peak = float(np.abs(wav).max())
    if peak > 0.97:
        wav = wav * (0.97 / peak)  # a limiter would also keep the file from clipping
    return wav.astype(np.float32)


def write_audio(path: Path, wav: np.ndarray, sample_rate: int) -> float:
    """Write PCM_16 WAV or FLAC (format from the suffix); returns the duration in seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wav, sample_rate, subtype="PCM_16")
    return len(wav) / sample_rate


# ---------------------------------------------------------------------------------------
# Corpus writers
# ---------------------------------------------------------------------------------------


@dataclass
class Summary:
    files: int = 0
    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.files += 1
        self.seconds += seconds


def write_libritts(
    root: Path, voices: list[Voice], rng, text: TextMaker, per_speaker: int
) -> Summary:
    """``train-clean-100/<spk>/<chapter>/<spk>_<chapter>_PPPPPP_SSSSSS.wav`` + texts, 24 kHz."""
    summary = Summary()
    for voice in voices:
        speaker_id = int(rng.integers(19, 9000))
        chapter_id = int(rng.integers(100, 150000))
        chapter = ("train-clean-100", speaker_id, chapter_id)
        paragraph, sentence_index = 0, 0
        for original, normalized in unique_texts(text.diverse, per_speaker):
            stem = libritts.utterance_id(speaker_id, chapter_id, paragraph, sentence_index)
            wav = synthesize(normalized, voice, neutral_rendering(voice, rng), 24000, rng)
            summary.add(write_audio(libritts.audio_path(root, *chapter, stem), wav, 24000))
            libritts.write_texts(root, *chapter, stem, original, normalized)
            # Paragraphs hold one to three sentences, as LibriTTS segments do.
            if rng.random() < 0.5:
                paragraph, sentence_index = paragraph + 1 + int(rng.integers(3)), 0
            else:
                sentence_index += 1
    return summary


def folder_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def check_tools() -> None:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"error: {' and '.join(missing)} not found; install with: "
            "apt-get update && apt-get install -y espeak-ng sox"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("speechssl/demo_data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mirror",
        type=Path,
        default=Path("/work/.mirror"),
        help="folder holding the fetched git directories of make_real_demo.SOURCES",
    )
    parser.add_argument(
        "--synthetic-only",
        action="store_true",
        help="rebuild only the espeak-ng corpus (LibriTTS); keep the real ones",
    )
    args = parser.parse_args(argv)
    check_tools()

    out: Path = args.out
    for name in ("LibriTTS",):
        shutil.rmtree(out / name, ignore_errors=True)  # a rerun replaces, never appends
    out.mkdir(parents=True, exist_ok=True)

    # One independent stream per corpus, so changing one corpus leaves the others unchanged.
    # Streams 1-4 drove the espeak LibriSpeech, IEMOCAP, VoxCeleb1 and LJSpeech sets that real
    # speech replaced; they stay drawn so LibriTTS keeps its committed samples.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(7)]
    voice_rng = streams[0]
    females = make_voices(voice_rng, "F", 15)
    males = make_voices(voice_rng, "M", 17)
    # Within a corpus every speaker has its own voice; LibriTTS re-uses two timbres that
    # the retired espeak LibriSpeech set had (the real LibriTTS derives from LibriSpeech).
    libritts_voices = [females[14], males[14], males[15], males[16], females[1], males[1]]

    summaries = {
        "LibriTTS": write_libritts(
            out / "LibriTTS", libritts_voices, streams[5], TextMaker(streams[5]), 5
        ),
    }
    (out / "ood_sentences.txt").write_text("\n".join(TextMaker.OOD) + "\n")
    if not args.synthetic_only:
        real = make_real_demo.build(out, args.mirror, args.seed)
        summaries.update({name: (summary.files, summary.seconds) for name, summary in real.items()})

    print(f"{'corpus':<22}{'files':>7}{'seconds':>10}{'MB':>8}")
    for name, summary in summaries.items():
        files, seconds = summary if isinstance(summary, tuple) else (summary.files, summary.seconds)
        print(f"{name:<22}{files:>7}{seconds:>10.1f}{folder_megabytes(out / name):>8.2f}")
    print(f"{'total (with text files)':<22}{'':>17}{folder_megabytes(out):>8.2f}")


if __name__ == "__main__":
    main()
