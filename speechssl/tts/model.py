"""Multi-speaker Tacotron 2: ``torchaudio.models.Tacotron2`` plus a speaker embedding.

``torchaudio.models.Tacotron2`` has no speaker input, so :class:`TacotronTTS` calls its parts
itself: ``embedding -> encoder`` gives the text memory ``(B, L, E)``; a learned speaker vector
``(E,)`` is **added** to every memory position (adding, not concatenating, keeps the decoder's
``encoder_embedding_dim`` and so the torchaudio decoder unchanged); then ``decoder`` (teacher
forced, or ``decoder.infer``) and ``postnet`` run as in ``Tacotron2.forward``/``infer``.

Pre-training -> fine-tuning: the fine-tuning model is built with the pre-training config,
loads the pre-trained state dict unchanged (:meth:`TacotronTTS.load_pretrained`), and
:meth:`TacotronTTS.add_speaker` appends one row for the (unseen) target speaker, initialised
to the mean of the pre-trained speaker vectors (``init="mean"``, the default: the target
starts from the "average voice") or to a fresh random vector (``init="random"``). Every other
parameter starts exactly from its pre-trained value. Without pre-training (fraction 0) the
target speaker is simply speaker 0 of a one-speaker model.

Mel targets are computed on the model's device from the batch's waveforms with
:class:`speechssl.features.LogMel` (natural log of the 80-bin magnitude mel, floored at
1e-5, as NVIDIA's Tacotron 2).

Example:
    >>> import torch
    >>> from speechssl.tts.data import collate_tts
    >>> model = TacotronTTS(TacotronConfig.preset("tiny", num_speakers=2))
    >>> items = [{"index": i, "wav": torch.randn(2000 + 500 * i), "speaker": i % 2,
    ...           "tokens": model.frontend.encode("hello" * (i + 1))} for i in range(2)]
    >>> loss, metrics = model(collate_tts(items))
    >>> loss.backward()
    >>> out = model.synthesize(["hi"], speaker=1, max_decoder_steps=20)
    >>> out.mel.shape[:2], out.alignments.shape[0]
    (torch.Size([1, 80]), 1)
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
from torch import nn
from torchaudio.models import Tacotron2

from speechssl.features import LogMel
from speechssl.safe_io import load_state_strict
from speechssl.tts.losses import guided_attention_loss, masked_mel_loss, stop_token_loss
from speechssl.tts.text import SYMBOLS, CharacterFrontend

__all__ = ["SynthesisOutput", "TacotronConfig", "TacotronTTS"]


@dataclass
class TacotronConfig:
    """Tacotron 2 sizes (defaults: Shen et al. 2018, Table/Sec. 2, as torchaudio's defaults),
    mel front end, speaker table and loss weights.

    ``preset("tiny")`` keeps 80 mel bins and the 22.05 kHz / 1024 / 256 STFT but shrinks every
    layer for fast CPU runs; ``preset("base")`` is the paper's model.
    """

    family: str = "tacotron2"
    # mel targets (Tacotron 2 / LJSpeech: 22,050 Hz, 1024-point STFT, 256 hop, 80 bins to 8 kHz)
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    f_min: float = 0.0
    f_max: float = 8000.0
    n_mels: int = 80
    # the network sees (log-mel - mel_mean) / mel_std: without it the output layer would spend
    # thousands of Adam steps moving its bias to the log-mel level (about -5). Rough constants
    # of speech at these settings (demo LJSpeech: -4.7 +- 1.8, LibriTTS: -5.0 +- 2.3).
    mel_mean: float = -5.0
    mel_std: float = 2.0
    # reduction factor r: mel frames predicted per decoder step (paper: 1; Tacotron 1 used 2-5).
    # r > 1 divides the sequential decoder steps, i.e. most of the CPU time, by r.
    frames_per_step: int = 1
    # text and speakers
    num_symbols: int = len(SYMBOLS)
    normalize_text: bool = True
    num_speakers: int = 1
    # network (paper sizes)
    encoder_embedding_dim: int = 512  # also the character embedding size
    encoder_n_convolution: int = 3
    encoder_kernel_size: int = 5
    attention_rnn_dim: int = 1024
    attention_hidden_dim: int = 128
    attention_location_n_filter: int = 32
    attention_location_kernel_size: int = 31
    decoder_rnn_dim: int = 1024
    prenet_dim: int = 256
    postnet_n_convolution: int = 5
    postnet_kernel_size: int = 5
    postnet_embedding_dim: int = 512
    decoder_dropout: float = 0.1
    attention_dropout: float = 0.1
    gate_threshold: float = 0.5
    max_decoder_steps: int = 1000  # inference guard: about 11.6 s at 22,050 Hz / 256 hop
    # losses
    mel_loss: str = "mse"  # the paper's "summed mean squared error"; "l1" also works
    stop_positive_weight: float = 5.0
    guided_attention_sigma: float = 0.2  # Tachibana et al. 2017's g
    guided_attention_weight: float = 1.0

    @classmethod
    def preset(cls, name: str, **overrides) -> TacotronConfig:
        """``"tiny"`` (about 0.5 M parameters, 2 frames per step, for CPU demos and tests) or
        ``"base"`` (the paper's 28 M-parameter model, 1 frame per step)."""
        if name == "base":
            return replace(cls(), **overrides)
        if name == "tiny":
            tiny = cls(
                encoder_embedding_dim=64,
                encoder_n_convolution=2,
                attention_rnn_dim=128,
                attention_hidden_dim=64,
                attention_location_n_filter=8,
                attention_location_kernel_size=15,
                decoder_rnn_dim=128,
                prenet_dim=64,
                postnet_n_convolution=3,
                postnet_embedding_dim=64,
                # two frames per decoder step halve the sequential decoder loop; on the demo
                # corpus the attention then aligns within ~100 steps at batch 8 (lr 2e-3)
                frames_per_step=2,
            )
            return replace(tiny, **overrides)
        raise ValueError(f"unknown Tacotron preset {name!r}; expected 'tiny' or 'base'")

    def validate(self) -> None:
        if self.num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {self.num_speakers}")
        if self.mel_loss not in ("l1", "mse"):
            raise ValueError(f"mel_loss must be 'l1' or 'mse', got {self.mel_loss!r}")
        if self.mel_std <= 0:
            raise ValueError(f"mel_std must be positive, got {self.mel_std}")
        if self.frames_per_step < 1:
            raise ValueError(f"frames_per_step must be >= 1, got {self.frames_per_step}")
        if self.max_decoder_steps < 1:
            raise ValueError("max_decoder_steps must be >= 1")
        if self.num_symbols < len(SYMBOLS):
            raise ValueError(f"num_symbols must be >= {len(SYMBOLS)} (the character table)")


class SynthesisOutput(NamedTuple):
    """What :meth:`TacotronTTS.synthesize` returns.

    Attributes:
        mel: ``(B, n_mels, F)`` post-net log-mel, zero after each length.
        mel_lengths: ``(B,)`` int64 frames, up to the decoder step where the stop token fired
            (inclusive) times ``frames_per_step``.
        alignments: ``(B, S, L)`` attention weights, decoder steps x characters
            (``S = F / frames_per_step``).
        token_lengths: ``(B,)`` int64 characters (EOS included).
        stopped: ``(B,)`` bool, False where ``max_decoder_steps`` was hit before the stop token.
    """

    mel: torch.Tensor
    mel_lengths: torch.Tensor
    alignments: torch.Tensor
    token_lengths: torch.Tensor
    stopped: torch.Tensor


class TacotronTTS(nn.Module):
    """Tacotron 2 with additive speaker embeddings and the full training objective.

    ``forward(batch) -> (loss, metrics)`` follows the Trainer contract; ``batch`` is a
    :class:`~speechssl.tts.data.TTSBatch` (``tokens``, ``token_lengths``, ``wav``, ``lengths``,
    ``speakers``). The loss is ``mel(before postnet) + mel(after postnet) + stop BCE +
    guided_attention_weight * guided attention``, each averaged over valid cells only.
    """

    def __init__(self, config: TacotronConfig | None = None) -> None:
        super().__init__()
        config = config or TacotronConfig()
        config.validate()
        self.config = config
        self.frontend = CharacterFrontend(normalize=config.normalize_text)
        self.logmel = LogMel(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            win_length=config.win_length,
            f_min=config.f_min,
            f_max=config.f_max,
            n_mels=config.n_mels,
            power=1.0,
        )
        self.tacotron = Tacotron2(
            mask_padding=False,  # padding is masked in the losses instead
            n_mels=config.n_mels,
            n_frames_per_step=config.frames_per_step,
            n_symbol=config.num_symbols,
            symbol_embedding_dim=config.encoder_embedding_dim,
            encoder_embedding_dim=config.encoder_embedding_dim,
            encoder_n_convolution=config.encoder_n_convolution,
            encoder_kernel_size=config.encoder_kernel_size,
            decoder_rnn_dim=config.decoder_rnn_dim,
            decoder_max_step=config.max_decoder_steps,
            decoder_dropout=config.decoder_dropout,
            attention_rnn_dim=config.attention_rnn_dim,
            attention_hidden_dim=config.attention_hidden_dim,
            attention_location_n_filter=config.attention_location_n_filter,
            attention_location_kernel_size=config.attention_location_kernel_size,
            attention_dropout=config.attention_dropout,
            prenet_dim=config.prenet_dim,
            postnet_n_convolution=config.postnet_n_convolution,
            postnet_kernel_size=config.postnet_kernel_size,
            postnet_embedding_dim=config.postnet_embedding_dim,
            gate_threshold=config.gate_threshold,
        )
        self.speaker_embedding = nn.Embedding(config.num_speakers, config.encoder_embedding_dim)
        # small start so the untrained speaker offset does not swamp the text memory
        nn.init.normal_(self.speaker_embedding.weight, std=0.01)

    def spec(self) -> dict:
        """``{"family", "config"}``: enough to rebuild the model with :meth:`from_spec`."""
        return {"family": self.config.family, "config": asdict(self.config)}

    @classmethod
    def from_spec(cls, spec: dict) -> TacotronTTS:
        return cls(TacotronConfig(**spec["config"]))

    # ------------------------------------------------------------------ mel targets
    @torch.no_grad()
    def mel_targets(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav (B, T), lengths (B,)`` -> log-mel ``(B, n_mels, F)`` and ``(B,)`` frames."""
        # targets in float32 even under mixed precision: the STFT and the log need the range
        with torch.autocast(device_type=wav.device.type, enabled=False):
            mel, mel_lengths = self.logmel(wav.float(), lengths)  # (B, F, n_mels)
        # (B, F, n_mels) -> (B, n_mels, F): Tacotron2's layout
        return mel.transpose(1, 2).contiguous(), mel_lengths

    # ------------------------------------------------------------------ network parts
    def _check_speakers(self, speakers: torch.Tensor) -> None:
        if bool((speakers < 0).any()) or bool((speakers >= self.config.num_speakers).any()):
            raise ValueError(
                f"speaker ids must lie in [0, {self.config.num_speakers}), got "
                f"{sorted(set(speakers.tolist()))}"
            )

    def encode_text(
        self, tokens: torch.Tensor, token_lengths: torch.Tensor, speakers: torch.Tensor
    ) -> torch.Tensor:
        """Speaker-conditioned memory ``(B, L, E)``; rows must be sorted by length, longest
        first (``pack_padded_sequence`` inside torchaudio's encoder requires it)."""
        self._check_speakers(speakers)
        # (B, L) -> (B, L, E) -> (B, E, L): the encoder convolutions take channels first
        embedded = self.tacotron.embedding(tokens).transpose(1, 2)
        memory = self.tacotron.encoder(embedded, token_lengths)  # (B, L, E)
        # (B, E) -> (B, 1, E): one speaker vector added to every character position
        return memory + self.speaker_embedding(speakers).unsqueeze(1)

    def _check_batch(self, batch) -> None:
        tokens, token_lengths = batch.tokens, batch.token_lengths
        if tokens.dim() != 2 or token_lengths.shape != (tokens.size(0),):
            raise ValueError(
                f"tokens must be (B, L) with token_lengths (B,), got {tuple(tokens.shape)} "
                f"and {tuple(token_lengths.shape)}"
            )
        if batch.wav.size(0) != tokens.size(0) or batch.speakers.shape != (tokens.size(0),):
            raise ValueError("wav, lengths, speakers and tokens must have the same batch size")
        if bool((token_lengths < 1).any()) or int(token_lengths.max()) > tokens.size(1):
            raise ValueError("token_lengths must lie in [1, L]")
        if int(tokens.max()) >= self.config.num_symbols or int(tokens.min()) < 0:
            raise ValueError(f"token ids must lie in [0, {self.config.num_symbols})")

    def forward(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher-forced training step -> ``(loss, metrics)``; see the class docstring."""
        self._check_batch(batch)
        mel, mel_lengths = self.mel_targets(batch.wav, batch.lengths)
        # torchaudio's encoder packs sequences without enforce_sorted=False, so sort the
        # whole batch by text length; the losses are order-independent.
        order = torch.argsort(batch.token_lengths, descending=True)
        token_lengths = batch.token_lengths[order]
        tokens = batch.tokens[order, : int(token_lengths[0])]
        mel, mel_lengths = mel[order], mel_lengths[order]
        mel = (mel - self.config.mel_mean) / self.config.mel_std
        # r frames per decoder step: pad the frames to a multiple of r (masked in the losses)
        r = self.config.frames_per_step
        step_lengths = (mel_lengths + r - 1) // r
        mel = torch.nn.functional.pad(mel, (0, (-mel.size(2)) % r))
        memory = self.encode_text(tokens, token_lengths, batch.speakers[order])
        # torchaudio views (B, F, n_mels) as (B, F / r, r * n_mels) without a copy, which
        # needs the frames-major memory layout: (B, n_mels, F) -> (B, F, n_mels) contiguous
        # -> a (B, n_mels, F) view of it
        teacher = mel.transpose(1, 2).contiguous().transpose(1, 2)
        mel_before, stop_logits, alignments = self.tacotron.decoder(
            memory, teacher, memory_lengths=token_lengths
        )  # (B, n_mels, F), (B, F / r), (B, F / r, L)
        mel_after = mel_before + self.tacotron.postnet(mel_before)

        config = self.config
        loss_mel_before = masked_mel_loss(mel_before, mel, mel_lengths, config.mel_loss)
        loss_mel_after = masked_mel_loss(mel_after, mel, mel_lengths, config.mel_loss)
        loss_stop = stop_token_loss(stop_logits, step_lengths, config.stop_positive_weight)
        loss_attention = guided_attention_loss(
            alignments, step_lengths, token_lengths, config.guided_attention_sigma
        )
        loss = (
            loss_mel_before
            + loss_mel_after
            + loss_stop
            + config.guided_attention_weight * loss_attention
        )
        with torch.no_grad():
            frame_valid = torch.arange(alignments.size(1), device=mel.device).unsqueeze(
                0
            ) < step_lengths.unsqueeze(1)  # (B, F / r)
            focus = (alignments.max(dim=2).values * frame_valid).sum() / frame_valid.sum()
        metrics = {
            "loss_mel_before": loss_mel_before.detach(),
            "loss_mel_after": loss_mel_after.detach(),
            "loss_stop": loss_stop.detach(),
            "loss_guided_attention": loss_attention.detach(),
            "attention_focus_rate": focus,
        }
        return loss, metrics

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(
        self,
        tokens: torch.Tensor,
        token_lengths: torch.Tensor,
        speakers: torch.Tensor,
        max_decoder_steps: int | None = None,
    ) -> SynthesisOutput:
        """Free-running synthesis of a padded token batch (any order); eval mode inside."""
        if tokens.dim() != 2 or token_lengths.shape != (tokens.size(0),):
            raise ValueError("tokens must be (B, L) with token_lengths (B,)")
        steps = self.config.max_decoder_steps if max_decoder_steps is None else max_decoder_steps
        if steps < 1:
            raise ValueError(f"max_decoder_steps must be >= 1, got {steps}")
        was_training = self.training
        self.eval()
        decoder = self.tacotron.decoder
        saved_steps = decoder.decoder_max_step
        try:
            order = torch.argsort(token_lengths, descending=True)
            sorted_lengths = token_lengths[order]
            memory = self.encode_text(
                tokens[order, : int(sorted_lengths[0])], sorted_lengths, speakers[order]
            )
            decoder.decoder_max_step = steps
            with warnings.catch_warnings():
                # hitting the guard is reported through ``stopped`` instead
                warnings.filterwarnings("ignore", message="Reached max decoder steps")
                mel, mel_lengths, stop_logits, alignments = decoder.infer(memory, sorted_lengths)
            mel = mel + self.tacotron.postnet(mel)
            mel = mel * self.config.mel_std + self.config.mel_mean  # back to log-mel units
            # decoder.infer stacks steps batch-major into (L, F * B); as Tacotron2.infer does:
            # (L, F * B) -> (L, F, B) -> (B, F, L)
            batch_size = tokens.size(0)
            alignments = alignments.unfold(1, batch_size, batch_size).transpose(0, 2)
        finally:
            decoder.decoder_max_step = saved_steps
            self.train(was_training)
        # the stop token fired on some step <=> sigmoid(logit) > threshold there
        stopped = (torch.sigmoid(stop_logits) > self.config.gate_threshold).any(dim=1)
        # the decoder counts steps; each step emits r frames
        step_lengths = mel_lengths.long()
        mel_lengths = step_lengths * self.config.frames_per_step
        frames = torch.arange(mel.size(2), device=mel.device).unsqueeze(0)
        mel = mel * (frames < mel_lengths.unsqueeze(1)).unsqueeze(1)
        steps_range = torch.arange(alignments.size(1), device=mel.device).unsqueeze(0)
        alignments = alignments * (steps_range < step_lengths.unsqueeze(1)).unsqueeze(2)
        restore = torch.argsort(order)
        return SynthesisOutput(
            mel[restore],
            mel_lengths[restore],
            alignments[restore],
            token_lengths.long(),
            stopped[restore],
        )

    def synthesize(
        self,
        texts: list[str] | str,
        speaker: int | torch.Tensor = 0,
        max_decoder_steps: int | None = None,
    ) -> SynthesisOutput:
        """Texts -> :class:`SynthesisOutput` (mel, mel_lengths, alignments, stop flags).

        Args:
            texts: sentences, normalised by the model's :class:`CharacterFrontend`.
            speaker: one speaker id for all, or ``(B,)`` ids.
            max_decoder_steps: guard against a stop token that never fires (default: config).
        """
        if isinstance(texts, str):
            texts = [texts]
        tokens, token_lengths = self.frontend.batch_encode(texts)
        device = self.speaker_embedding.weight.device
        speakers = torch.as_tensor(speaker, dtype=torch.int64).to(device)
        speakers = speakers.expand(len(texts)) if speakers.dim() == 0 else speakers
        if speakers.shape != (len(texts),):
            raise ValueError(f"speaker must be an int or ({len(texts)},) ids")
        return self.infer(tokens.to(device), token_lengths.to(device), speakers, max_decoder_steps)

    # ------------------------------------------------------------------ transfer
    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a pre-trained :class:`TacotronTTS` state dict (strict: same config)."""
        if "model" in state_dict and isinstance(state_dict["model"], dict):
            state_dict = state_dict["model"]  # a Trainer checkpoint
        # one line naming what does not fit (build the fine-tuning model with the
        # pre-training config)
        load_state_strict(self, state_dict, "pre-trained state", name="this TacotronTTS config")

    @torch.no_grad()
    def add_speaker(self, init: str = "mean", seed: int = 0) -> int:
        """Append one speaker vector (for an unseen target speaker); returns its id.

        ``init="mean"``: the mean of the existing vectors; ``"random"``: N(0, std of the
        existing vectors) drawn with ``seed``. ``config.num_speakers`` grows by one so the
        model's spec rebuilds the enlarged table.
        """
        weight = self.speaker_embedding.weight
        if init == "mean":
            new_row = weight.mean(dim=0, keepdim=True)
        elif init == "random":
            generator = torch.Generator().manual_seed(seed)
            std = float(weight.std()) if weight.numel() > 1 else 0.01
            new_row = torch.randn(1, weight.size(1), generator=generator).to(weight) * std
        else:
            raise ValueError(f"add_speaker init must be 'mean' or 'random', got {init!r}")
        table = nn.Embedding(weight.size(0) + 1, weight.size(1)).to(weight.device, weight.dtype)
        table.weight.copy_(torch.cat([weight, new_row], dim=0))
        self.speaker_embedding = table
        self.config = replace(self.config, num_speakers=table.num_embeddings)
        return table.num_embeddings - 1
