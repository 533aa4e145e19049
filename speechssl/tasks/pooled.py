"""Encode once: per-layer pooled utterance features of a frozen upstream, cached.

A frozen upstream's hidden states depend only on its weights and the audio, so each
utterance is encoded once per run and every fold, seed, head, probe and verification
trial list reads the same cached tensor. :class:`FeatureCache` keys entries by what they
depend on: the upstream's fingerprint (class, architecture, weights and buffers, hashed),
the manifest's (ids, audio paths, durations, and each audio file's size, mtime and a
digest of its first and last blocks: :func:`speechssl.safe_io.file_identity`) and the
options (sample rate, pooling): a changed weight, row or audio file re-encodes.

The cached tensor is ``(N, L + 1, 2, D)``: for each utterance and hidden state (0 is the
input to the first layer), the mean and standard deviation over its valid frames. The
linear probe reads mean+std; training-free verification reads the means.

Example:
    >>> import tempfile
    >>> from speechssl.data.compact import Manifest
    >>> from speechssl.encoders.fbank_upstream import FbankUpstream
    >>> from speechssl.testing import write_tone
    >>> root = tempfile.mkdtemp()
    >>> rows = [{"id": f"u{i}", "audio": str(write_tone(f"{root}/u{i}.wav", 0.5, 16000)),
    ...          "duration": 0.5, "sample_rate": 16000} for i in range(3)]
    >>> cache = FeatureCache()
    >>> features = cache.pooled(FbankUpstream(n_mels=40), Manifest.from_rows(rows))
    >>> features.shape  # (N, L + 1, mean/std, D)
    torch.Size([3, 1, 2, 40])
    >>> cache.encoded_utterances
    3
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch
from torch import nn

from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig, make_loader
from speechssl.encoders.base import Encoder
from speechssl.heads.pooling import pool_hidden_states
from speechssl.progress_bar import progress_bar
from speechssl.safe_io import UnreadableFileError, file_identity, load_torch_file, save_torch_atomic

__all__ = ["FeatureCache", "encoder_fingerprint", "manifest_fingerprint", "pool_hidden_states"]

# what each cached entry holds; a change of the statistics invalidates every entry
POOLING = "mean+std over valid frames, float32"


def encoder_fingerprint(encoder: nn.Module) -> str:
    """Hex digest of the encoder's class, architecture (its spec, or its repr for a plain
    module) and every parameter and buffer (names, shapes, values): weight-free settings
    such as FBANK's ``n_mels`` count too."""
    architecture = encoder.spec() if isinstance(encoder, Encoder) else repr(encoder)
    digest = hashlib.sha1(f"{type(encoder).__qualname__}\n{architecture}".encode())
    for name, tensor in list(encoder.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(
            tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def manifest_fingerprint(manifest: Manifest) -> str:
    """Hex digest of the rows' ids, audio paths and durations and of the audio itself
    (:func:`~speechssl.safe_io.file_identity`: size, mtime, first and last blocks), in order:
    a clip replaced by another of the same length changes it."""
    digest = hashlib.sha1()
    for index in range(len(manifest)):
        row = manifest.row(index)
        identity = file_identity(row["audio"], content=True)
        digest.update(f"{row['id']}\t{row['audio']}\t{row['duration']:.4f}\t{identity}\n".encode())
    return digest.hexdigest()[:16]


class FeatureCache:
    """Per-layer pooled features of frozen upstreams, computed once per (upstream, manifest).

    Args:
        directory: also keep entries on disk here (``<key>.pt``), so a resumed run or a
            second recipe stage reuses them; ``None`` keeps them in memory only.
        data_config: batching of the encoding pass (whole utterances, no crop).
        device: where the encoder runs.

    ``encoded_utterances`` counts the utterances actually passed through an encoder (a
    second request for the same upstream and manifest adds nothing).
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        data_config: DataConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.directory = None if directory is None else Path(directory)
        self.data_config = data_config or DataConfig(max_batch_seconds=40.0, num_workers=0)
        self.device = torch.device(device)
        self.encoded_utterances = 0
        self._entries: dict[str, torch.Tensor] = {}

    def key(self, encoder: nn.Module, manifest: Manifest) -> str:
        """``<encoder>-<manifest and audio>-<options>``: what an entry depends on."""
        options = hashlib.sha1(f"{self.data_config.sample_rate}\t{POOLING}".encode())
        return (
            f"{encoder_fingerprint(encoder)}-{manifest_fingerprint(manifest)}-"
            f"{options.hexdigest()[:8]}"
        )

    def pooled(self, encoder: nn.Module, manifest: Manifest) -> torch.Tensor:
        """``(N, L + 1, 2, D)`` float32 features of ``manifest`` in manifest order."""
        key = self.key(encoder, manifest)
        if key in self._entries:
            return self._entries[key]
        path = None if self.directory is None else self.directory / f"{key}.pt"
        if path is not None and path.is_file():
            try:
                features = load_torch_file(path, "feature cache entry")
                if isinstance(features, torch.Tensor) and features.shape[0] == len(manifest):
                    self._entries[key] = features
                    return features
            except UnreadableFileError:
                pass  # an unreadable cache entry is recomputed and rewritten
        features = self._encode(encoder, manifest)
        self._entries[key] = features
        if path is not None:
            save_torch_atomic(features, path, durable=False)
        return features

    @torch.no_grad()
    def _encode(self, encoder: nn.Module, manifest: Manifest) -> torch.Tensor:
        was_training = encoder.training
        encoder.eval().to(self.device)
        loader = make_loader(
            manifest,
            dataclasses.replace(self.data_config, num_workers=0, max_duration=None),
            train=False,
        )
        pooled, indices = [], []
        name = getattr(encoder, "family", "") or type(encoder).__name__
        # a bar on a terminal, a line every 30 s in a log: encoding is the long step
        progress = progress_bar(total=len(manifest), desc=f"encode {name}", unit="utt", leave=False)
        try:
            for batch in loader:
                if len(batch) == 0:
                    continue
                batch = batch.to(self.device)
                output = encoder(batch.wav, batch.lengths)
                pooled.append(pool_hidden_states(output.hidden_states, output.lengths).cpu())
                indices.append(batch.indices.cpu())
                self.encoded_utterances += len(batch)
                progress.update(len(batch))
        finally:
            progress.close()
            encoder.train(was_training)
        if not pooled:
            raise ValueError("no utterance of the manifest could be read")
        indices = torch.cat(indices)
        if len(indices) != len(manifest):
            raise ValueError(
                f"{len(manifest) - len(indices)} of {len(manifest)} utterances could not be read"
            )
        return torch.cat(pooled)[torch.argsort(indices)]
