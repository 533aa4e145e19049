"""Character text front end for Tacotron 2: English normalisation and a fixed symbol table.

Nothing is downloaded: no phonemiser, no pronunciation lexicon. The pipeline is

1. Unicode compatibility decomposition with accents stripped (``café`` -> ``cafe``);
2. abbreviations expanded, case-insensitively, when followed by a full stop:
   ``Mr. Mrs. Ms. Dr. St. Jr. Sr. Co. Ltd. Gen. Capt. Col. Lt. Sgt. Prof. Rev. Hon. No. vs. etc.``
   (``St.`` always reads ``saint``: telling it from ``street`` needs syntax);
3. numbers read as English words: ``$5`` -> ``five dollars``, ``50%`` -> ``fifty percent``,
   ordinals ``1st`` -> ``first``, decimals ``3.5`` -> ``three point five``, thousands separators
   dropped (``1,000`` -> ``one thousand``), integers 1100-1999 and 2010-2099 that are not whole
   hundreds read as years (``1823`` -> ``eighteen twenty-three``, LJSpeech's convention),
   everything else as a cardinal (``23`` -> ``twenty-three``);
4. ``&`` -> `` and ``, then lower-casing and whitespace collapsed;
5. each remaining character mapped through :data:`SYMBOLS`; characters outside the table
   (e.g. ``#``, CJK) are dropped and counted in :attr:`CharacterFrontend.dropped`, never an error.

Example:
    >>> frontend = CharacterFrontend()
    >>> frontend.normalize("Dr. Baker came 23 times in 1823.")
    'doctor baker came twenty-three times in eighteen twenty-three.'
    >>> frontend.encode("Hi!").tolist()
    [21, 22, 2, 1]
    >>> tokens, lengths = frontend.batch_encode(["Hi!", "a"])
    >>> tokens.tolist(), lengths.tolist()
    ([[21, 22, 2, 1], [14, 1, 0, 0]], [4, 2])
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import torch

__all__ = [
    "EOS",
    "PAD",
    "SYMBOLS",
    "CharacterFrontend",
    "normalize_text",
    "number_to_words",
]

PAD = "_"  # index 0: Tacotron2 pads token batches with zeros
EOS = "~"  # index 1: appended so the encoder sees where the sentence ends
PUNCTUATION = "!'(),-.:;? \""
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYMBOLS: tuple[str, ...] = (PAD, EOS, *PUNCTUATION, *LETTERS)

ABBREVIATIONS = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miss",
    "dr": "doctor",
    "st": "saint",
    "jr": "junior",
    "sr": "senior",
    "co": "company",
    "ltd": "limited",
    "gen": "general",
    "capt": "captain",
    "col": "colonel",
    "lt": "lieutenant",
    "sgt": "sergeant",
    "prof": "professor",
    "rev": "reverend",
    "hon": "honorable",
    "no": "number",
    "vs": "versus",
    "etc": "et cetera",
}
_ABBREVIATION_PATTERN = re.compile(
    r"\b(" + "|".join(ABBREVIATIONS) + r")\.(?=\s|$)", flags=re.IGNORECASE
)

_ONES = (
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    + ("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen")
    + ("eighteen", "nineteen")
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _below_thousand(number: int) -> str:
    words = []
    hundreds, rest = divmod(number, 100)
    if hundreds:
        words.append(f"{_ONES[hundreds]} hundred")
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens] + (f"-{_ONES[ones]}" if ones else ""))
    elif rest or not hundreds:
        words.append(_ONES[rest])
    return " ".join(words)


def number_to_words(number: int, year: bool = False) -> str:
    """English words for a non-negative integer; ``year=True`` reads ``1823`` as two pairs.

    Written by hand because num2words/inflect are not dependencies and the need is small.

    Example:
        >>> number_to_words(2023), number_to_words(1823, year=True), number_to_words(1900, year=True)
        ('two thousand twenty-three', 'eighteen twenty-three', 'nineteen hundred')
    """
    if number < 0:
        raise ValueError(f"number_to_words expects a non-negative integer, got {number}")
    if year and 1000 <= number <= 9999 and not 2000 <= number <= 2009:
        high, low = divmod(number, 100)
        if low == 0:
            return f"{_below_thousand(high)} hundred"
        low_words = _below_thousand(low) if low >= 10 else f"oh {_ONES[low]}"
        return f"{_below_thousand(high)} {low_words}"
    if number < 1000:
        return _below_thousand(number)
    words = []
    for scale, name in _SCALES:
        count, number = divmod(number, scale)
        if count:
            words.append(f"{number_to_words(count)} {name}")
    if number:
        words.append(_below_thousand(number))
    return " ".join(words)


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    prefix, dash, last_part = last.rpartition("-")
    if last_part in _ORDINAL_IRREGULAR:
        last_part = _ORDINAL_IRREGULAR[last_part]
    elif last_part.endswith("y"):
        last_part = last_part[:-1] + "ieth"
    else:
        last_part += "th"
    last = f"{prefix}{dash}{last_part}"
    return f"{head} {last}" if head else last


def _is_year(number: int) -> bool:
    return (1100 <= number <= 1999 or 2010 <= number <= 2099) and number % 100 != 0


def _expand_money(match: re.Match) -> str:
    whole, cents = match.group(1).replace(",", ""), match.group(2)
    dollars = int(whole)
    words = f"{number_to_words(dollars)} dollar{'s' if dollars != 1 else ''}"
    if cents and int(cents):
        words += f" {number_to_words(int(cents))} cent{'s' if int(cents) != 1 else ''}"
    return words


def _expand_decimal(match: re.Match) -> str:
    whole, fraction = match.group(1), match.group(2)
    return f"{number_to_words(int(whole))} point " + " ".join(_ONES[int(d)] for d in fraction)


def _expand_ordinal(match: re.Match) -> str:
    return _ordinal(number_to_words(int(match.group(1))))


def _expand_integer(match: re.Match) -> str:
    number = int(match.group(0))
    return number_to_words(number, year=_is_year(number))


def normalize_text(text: str, lowercase: bool = True) -> str:
    """Steps 1-4 of the module docstring: accents, abbreviations, numbers, case, spaces.

    Example:
        >>> normalize_text("Mr. Smith paid $3.50 for 2 books, 50% off, on the 21st.")
        'mister smith paid three dollars fifty cents for two books, fifty percent off, on the twenty-first.'
    """
    # NFKD splits "é" into "e" + a combining accent, which is then dropped
    text = unicodedata.normalize("NFKD", text)
    text = "".join(char for char in text if not unicodedata.combining(char))
    text = _ABBREVIATION_PATTERN.sub(lambda match: ABBREVIATIONS[match.group(1).lower()], text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separators
    text = re.sub(r"\$(\d+)(?:\.(\d\d))?\b", _expand_money, text)
    text = re.sub(r"(\d)\s*%", r"\1 percent", text)
    text = re.sub(r"\b(\d+)\.(\d+)\b", _expand_decimal, text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", _expand_ordinal, text, flags=re.IGNORECASE)
    text = re.sub(r"\d+", _expand_integer, text)
    text = text.replace("&", " and ")
    if lowercase:
        text = text.lower()
    return re.sub(r"\s+", " ", text).strip()


class CharacterFrontend:
    """Text -> token ids over the fixed :data:`SYMBOLS` table (pad = 0, EOS = 1).

    Args:
        normalize: run :func:`normalize_text` first (turn off for already-normalised text).
        lowercase: lower-case the text (the table has lower-case letters only, so upper-case
            letters are dropped when this is off).
        append_eos: end every sequence with the EOS token.

    Attributes:
        dropped: ``Counter`` of characters dropped because they are outside the table.
    """

    def __init__(self, normalize: bool = True, lowercase: bool = True, append_eos: bool = True):
        self.normalize_enabled = normalize
        self.lowercase = lowercase
        self.append_eos = append_eos
        self.symbol_to_id = {symbol: index for index, symbol in enumerate(SYMBOLS)}
        self.dropped: Counter[str] = Counter()

    @property
    def num_symbols(self) -> int:
        """Size of the embedding table a model needs (``Tacotron2(n_symbol=...)``)."""
        return len(SYMBOLS)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    def normalize(self, text: str) -> str:
        if self.normalize_enabled:
            return normalize_text(text, lowercase=self.lowercase)
        return text.lower() if self.lowercase else text

    def encode(self, text: str) -> torch.Tensor:
        """``str -> (L,) int64`` token ids; unknown characters are dropped and counted."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = []
        for char in self.normalize(text):
            index = self.symbol_to_id.get(char)
            if index is None or index < 2:  # pad and EOS never come from the text itself
                self.dropped[char] += 1
            else:
                ids.append(index)
        if not ids:  # a sentence of unknown characters only cannot be spoken
            raise ValueError(f"text {text!r} has no character in the symbol table")
        if self.append_eos:
            ids.append(self.eos_id)
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, tokens: torch.Tensor | Sequence[int]) -> str:
        """Token ids -> text, stopping at the first pad and leaving out EOS."""
        chars = []
        for index in torch.as_tensor(tokens).tolist():
            if index == self.pad_id:
                break
            if index != self.eos_id:
                chars.append(SYMBOLS[index])
        return "".join(chars)

    def batch_encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> ``tokens (B, L_max)`` zero-padded int64 and ``lengths (B,)`` int64."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("batch_encode expects a non-empty list of strings")
        return pad_tokens([self.encode(text) for text in texts])


def pad_tokens(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(L_i,)] -> (B, L_max)`` zero-padded (the pad id) and ``lengths (B,)``."""
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
    tokens = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=0)
    return tokens, lengths
