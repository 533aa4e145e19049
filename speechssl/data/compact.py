"""A manifest held in compact arrays, so ten million utterances fit in bounded memory.

A list of Python dicts costs about 500 bytes an utterance (fairseq's HuBERT loader keeps
lists of Python strings, about 150), which runs a 10M-utterance corpus out of memory on
every data-loader worker. :class:`Manifest` keeps one object per *column*, never one per
row:

- ``audio``: the directory as an int32 code into a vocabulary of directories, plus the
  file name in one UTF-8 byte buffer with int64 offsets;
- ``id``: a byte buffer too, left empty where the id is the file name's stem (LibriSpeech,
  VoxCeleb, IEMOCAP ids are), so most ids cost 8 bytes;
- ``duration`` float32, ``sample_rate`` int32;
- ``speaker``, ``label``, ``session``, ``fold``, ``split``, ``gender``: int32 codes with
  their vocabularies (code ``-1`` where a row has no value);
- ``text``: a byte buffer with offsets.

Keys outside :data:`speechssl.data.manifest.REQUIRED_KEYS` and ``OPTIONAL_KEYS`` are not
kept. Malformed lines (bad JSON, a missing key, a duration that is not a positive number)
are skipped and counted in :attr:`Manifest.skipped`.

Example:
    >>> rows = [
    ...     {"id": "19-198-0001", "audio": "/data/19/198/19-198-0001.flac", "duration": 2.5,
    ...      "sample_rate": 16000, "speaker": "19"},
    ...     {"id": "26-495-0000", "audio": "/data/26/495/26-495-0000.flac", "duration": 4.0,
    ...      "sample_rate": 16000, "speaker": "26"},
    ... ]
    >>> manifest = Manifest.from_rows(rows)
    >>> len(manifest), manifest.audio_path(1), manifest.utterance_id(0)
    (2, '/data/26/495/26-495-0000.flac', '19-198-0001')
    >>> manifest.durations
    array([2.5, 4. ], dtype=float32)
    >>> manifest.column("speaker")
    CategoricalColumn(codes=array([0, 1], dtype=int32), vocabulary=('19', '26'))
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from speechssl.data.manifest import OPTIONAL_KEYS, read_jsonl

__all__ = ["CATEGORICAL_KEYS", "CategoricalColumn", "Manifest"]

#: Columns stored as int32 codes plus a vocabulary.
CATEGORICAL_KEYS = tuple(key for key in OPTIONAL_KEYS if key != "text")

# Rows per chunk when gathering byte buffers, so a subset of 10M rows never builds a
# 10M-element temporary per byte.
_GATHER_CHUNK_ROWS = 1 << 20


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical column: ``codes (N,)`` int32 (``-1`` = no value) and its vocabulary."""

    codes: np.ndarray
    vocabulary: tuple

    def values(self) -> list:
        """The decoded values, ``None`` where a row has none (builds N Python objects)."""
        return [self.vocabulary[code] if code >= 0 else None for code in self.codes.tolist()]


class _StringColumn:
    """Strings as one UTF-8 byte buffer ``(total_bytes,) uint8`` and offsets ``(N + 1,) int64``."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray) -> None:
        self.buffer = buffer
        self.offsets = offsets

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> _StringColumn:
        builder = _StringBuilder()
        for string in strings:
            builder.append(string)
        return builder.build()

    def __getitem__(self, index: int) -> str:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.buffer[start:end].tobytes().decode("utf-8")

    def take(self, indices: np.ndarray) -> _StringColumn:
        starts = self.offsets[indices]
        lengths = self.offsets[indices + 1] - starts
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        buffer = np.empty(int(offsets[-1]), dtype=np.uint8)
        # Vectorised gather of variable-length slices, a chunk of rows at a time: byte j of
        # row k comes from old position starts[k] + j.
        for first in range(0, len(indices), _GATHER_CHUNK_ROWS):
            last = min(first + _GATHER_CHUNK_ROWS, len(indices))
            begin, end = offsets[first], offsets[last]
            shift = np.repeat(starts[first:last] - offsets[first:last], lengths[first:last])
            buffer[begin:end] = self.buffer[shift + np.arange(begin, end)]
        return _StringColumn(buffer, offsets)

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes + self.offsets.nbytes


class _StringBuilder:
    """Appends strings into a growing ``bytearray`` and an ``array('q')`` of offsets."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.offsets = array("q", [0])

    def append(self, string: str) -> None:
        self.buffer += string.encode("utf-8")
        self.offsets.append(len(self.buffer))

    def pad_to(self, num_rows: int) -> None:
        """Give empty strings to the rows before ``num_rows`` that have none."""
        missing = num_rows + 1 - len(self.offsets)
        if missing > 0:
            self.offsets.extend([len(self.buffer)] * missing)

    def build(self) -> _StringColumn:
        # np.frombuffer shares memory with the builder's buffers: no copy at the peak.
        buffer = (
            np.frombuffer(self.buffer, dtype=np.uint8) if self.buffer else np.zeros(0, np.uint8)
        )
        return _StringColumn(buffer, np.frombuffer(self.offsets, dtype=np.int64))


class _CategoricalBuilder:
    """int32 codes in an ``array('i')``; rows before the first value of the key get ``-1``."""

    def __init__(self) -> None:
        self.codes = array("i")
        self.index: dict = {}

    def append(self, value, row_number: int) -> None:
        codes = self.codes
        if len(codes) < row_number:
            codes.extend([-1] * (row_number - len(codes)))
        code = self.index.get(value) if type(value) is str else None  # the common case first
        if code is None:
            if value is None:
                codes.append(-1)
                return
            if not isinstance(value, str | int | float | bool):
                value = json.dumps(value, sort_keys=True)  # lists/dicts become hashable text
            code = self.index.get(value)
            if code is None:
                code = self.index[value] = len(self.index)
        codes.append(code)

    def build(self, num_rows: int) -> CategoricalColumn:
        self.codes.extend([-1] * (num_rows - len(self.codes)))
        return CategoricalColumn(np.frombuffer(self.codes, dtype=np.int32), tuple(self.index))


def _stem(file_name: str) -> str:
    dot = file_name.rfind(".")
    return file_name[:dot] if dot > 0 else file_name


class Manifest:
    """An utterance manifest stored column-wise in NumPy arrays (see the module docstring).

    Build it with :meth:`from_jsonl` or :meth:`from_rows`; index rows with
    :meth:`audio_path`, :meth:`utterance_id`, :meth:`text`, :meth:`row`.
    """

    def __init__(
        self,
        directories: CategoricalColumn,
        file_names: _StringColumn,
        ids: _StringColumn,
        durations: np.ndarray,
        sample_rates: np.ndarray,
        categorical: dict[str, CategoricalColumn],
        texts: _StringColumn | None,
        skipped: list[dict] | None = None,
    ) -> None:
        self._directories = directories
        self._file_names = file_names
        self._ids = ids
        self.durations = durations
        self.sample_rates = sample_rates
        self._categorical = categorical
        self._texts = texts
        #: Malformed rows met while reading: ``{"path", "reason", "detail"}`` dicts.
        self.skipped: list[dict] = skipped if skipped is not None else []

    # ----------------------------------------------------------------------------- building
    @classmethod
    def from_jsonl(cls, path: str | os.PathLike) -> Manifest:
        """Read a JSONL manifest; malformed lines land in ``manifest.skipped``, not an error.

        Raises:
            speechssl.data.manifest.ManifestError: the file does not exist.
        """
        skipped: list[dict] = []
        return cls.from_rows(read_jsonl(path, skipped=skipped), skipped=skipped, source=path)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[dict],
        skipped: list[dict] | None = None,
        source: str | os.PathLike = "<rows>",
    ) -> Manifest:
        """Build from an iterable of row dicts (each is dropped as soon as it is stored)."""
        skipped = skipped if skipped is not None else []
        directories = _CategoricalBuilder()
        file_names, ids, texts = _StringBuilder(), _StringBuilder(), _StringBuilder()
        durations, sample_rates = array("f"), array("i")
        categorical = {key: _CategoricalBuilder() for key in CATEGORICAL_KEYS}
        directory_codes, directory_index = directories.codes, directories.index
        row_number = 0
        for row in rows:
            try:
                audio, utterance_id = row["audio"], row["id"]
                duration, sample_rate = float(row["duration"]), int(row["sample_rate"])
                if not (isinstance(audio, str) and isinstance(utterance_id, str)):
                    raise TypeError("audio and id must be strings")
                if not (audio and utterance_id):
                    raise ValueError("audio and id must be non-empty strings")
                if not (math.isfinite(duration) and duration > 0 and sample_rate > 0):
                    raise ValueError(f"duration {duration} / sample_rate {sample_rate}")
            except (KeyError, TypeError, ValueError) as error:
                detail = f"{row.get('id', '?') if isinstance(row, dict) else '?'}: {error}"
                skipped.append(
                    {"path": os.fspath(source), "reason": "malformed-line", "detail": detail}
                )
                continue
            # The hot loop of a 10M-line load: builder appends are inlined here for speed.
            cut = audio.rfind("/") + 1
            directory, file_name = audio[:cut], audio[cut:]
            code = directory_index.get(directory)
            if code is None:
                code = directory_index[directory] = len(directory_index)
            directory_codes.append(code)
            file_names.buffer += file_name.encode("utf-8")
            file_names.offsets.append(len(file_names.buffer))
            # Most corpora name the file after the id: store nothing then.
            if utterance_id != _stem(file_name):
                ids.buffer += utterance_id.encode("utf-8")
            ids.offsets.append(len(ids.buffer))
            durations.append(duration)
            sample_rates.append(sample_rate)
            # Only the row's own keys are visited (rows have few): faster than all columns.
            for key, value in row.items():
                builder = categorical.get(key)
                if builder is not None:
                    builder.append(value, row_number)
                elif key == "text" and value is not None:
                    texts.pad_to(row_number)
                    texts.append(str(value))
            row_number += 1
        built = {key: builder.build(row_number) for key, builder in categorical.items()}
        # Keep only the categorical columns that some row has.
        built = {key: column for key, column in built.items() if column.vocabulary}
        has_text = len(texts.offsets) > 1
        texts.pad_to(row_number)
        return cls(
            directories.build(row_number),
            file_names.build(),
            ids.build(),
            np.frombuffer(durations, dtype=np.float32),
            np.frombuffer(sample_rates, dtype=np.int32),
            built,
            texts.build() if has_text else None,
            skipped,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the arrays to one ``.npz`` file, which :meth:`load` reads back in seconds.

        Parsing JSON costs about 30 us a line (minutes for 10M lines); a run that restarts,
        or every DDP rank, can load this cache instead.
        """
        arrays = {
            "directory_codes": self._directories.codes,
            "file_names": self._file_names.buffer,
            "file_name_offsets": self._file_names.offsets,
            "ids": self._ids.buffer,
            "id_offsets": self._ids.offsets,
            "durations": self.durations,
            "sample_rates": self.sample_rates,
        }
        vocabularies = {"directory": list(self._directories.vocabulary)}
        for key, column in self._categorical.items():
            arrays[f"codes_{key}"] = column.codes
            vocabularies[key] = list(column.vocabulary)
        if self._texts is not None:
            arrays["texts"], arrays["text_offsets"] = self._texts.buffer, self._texts.offsets
        header = {"format": 1, "vocabularies": vocabularies, "skipped": self.skipped}
        arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        with open(path, "wb") as file:  # a file object: np.savez would append ".npz"
            np.savez(file, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest written by :meth:`save`."""
        with np.load(path) as archive:
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
        if header.get("format") != 1:
            raise ValueError(
                f"{path}: not a speechssl compact manifest (format {header.get('format')})"
            )
        vocabularies = header["vocabularies"]
        categorical = {
            key: CategoricalColumn(arrays[f"codes_{key}"], tuple(vocabularies[key]))
            for key in vocabularies
            if key != "directory"
        }
        texts = None
        if "texts" in arrays:
            texts = _StringColumn(arrays["texts"], arrays["text_offsets"])
        return cls(
            CategoricalColumn(arrays["directory_codes"], tuple(vocabularies["directory"])),
            _StringColumn(arrays["file_names"], arrays["file_name_offsets"]),
            _StringColumn(arrays["ids"], arrays["id_offsets"]),
            arrays["durations"],
            arrays["sample_rates"],
            categorical,
            texts,
            header["skipped"],
        )

    # ------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.durations)

    def __repr__(self) -> str:
        return (
            f"Manifest({len(self)} utterances, {self.total_duration / 3600:.2f} h, "
            f"columns={self.columns}, {self.nbytes / 2**20:.1f} MiB, skipped={len(self.skipped)})"
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the optional columns present (categorical ones and ``text``)."""
        return tuple(self._categorical) + (("text",) if self._texts is not None else ())

    @property
    def total_duration(self) -> float:
        return float(self.durations.sum(dtype=np.float64))

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (vocabularies, a few Python objects, not counted)."""
        total = self._directories.codes.nbytes + self._file_names.nbytes + self._ids.nbytes
        total += self.durations.nbytes + self.sample_rates.nbytes
        total += sum(column.codes.nbytes for column in self._categorical.values())
        return total + (self._texts.nbytes if self._texts is not None else 0)

    def _check(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"utterance index {index} out of range for {len(self)} utterances")
        return index % len(self)

    def audio_path(self, index: int) -> str:
        index = self._check(index)
        directory = self._directories.vocabulary[self._directories.codes[index]]
        return directory + self._file_names[index]

    def utterance_id(self, index: int) -> str:
        index = self._check(index)
        stored = self._ids[index]
        return stored if stored else _stem(self._file_names[index])

    def text(self, index: int) -> str | None:
        """The row's text, ``""`` if the row has none, ``None`` if no row has any."""
        return None if self._texts is None else self._texts[self._check(index)]

    def column(self, name: str) -> CategoricalColumn:
        """Codes and vocabulary of a categorical column (``speaker``, ``label``, ...)."""
        if name not in self._categorical:
            raise KeyError(f"manifest has no column {name!r}; it has {list(self._categorical)}")
        return self._categorical[name]

    def row(self, index: int) -> dict:
        """Rebuild one row as the dict it was read from (only the kept keys)."""
        index = self._check(index)
        row = {
            "id": self.utterance_id(index),
            "audio": self.audio_path(index),
            "duration": float(self.durations[index]),
            "sample_rate": int(self.sample_rates[index]),
        }
        for key, column in self._categorical.items():
            code = column.codes[index]
            if code >= 0:
                row[key] = column.vocabulary[code]
        if self._texts is not None:
            row["text"] = self._texts[index]
        return row

    def rows(self) -> Iterator[dict]:
        """Yield every row as a dict (e.g. to ``write_jsonl`` a filtered manifest)."""
        for index in range(len(self)):
            yield self.row(index)

    # ----------------------------------------------------------------------------- subsets
    def subset(self, indices) -> Manifest:
        """A new manifest of the rows at ``indices`` (any int sequence or array), in that order.

        Vocabularies are kept as they are, so codes stay comparable with the parent's.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"subset indices must lie in [0, {len(self)})")
        return Manifest(
            CategoricalColumn(self._directories.codes[indices], self._directories.vocabulary),
            self._file_names.take(indices),
            self._ids.take(indices),
            self.durations[indices],
            self.sample_rates[indices],
            {
                key: CategoricalColumn(column.codes[indices], column.vocabulary)
                for key, column in self._categorical.items()
            },
            self._texts.take(indices) if self._texts is not None else None,
            list(self.skipped),
        )

    def filter(self, mask) -> Manifest:
        """Rows where the boolean ``mask (N,)`` is true, e.g. ``m.filter(m.durations < 20)``."""
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (len(self),):
            raise ValueError(
                f"filter needs a boolean mask of shape ({len(self)},), got {mask.dtype} {mask.shape}"
            )
        return self.subset(np.flatnonzero(mask))
