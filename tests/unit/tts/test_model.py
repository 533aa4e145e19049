"""TacotronTTS: losses with padding, training step on demo audio, synthesis, weight transfer."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
import torch

from speechssl.data.prepare.common import resolve_audio
from speechssl.demo import demo_path
from speechssl.tts.data import TTSDataset, collate_tts
from speechssl.tts.losses import guided_attention_loss, masked_mel_loss, stop_token_loss
from speechssl.tts.model import TacotronConfig, TacotronTTS


def _ljspeech_rows(count: int) -> list[dict]:
    root = demo_path("ljspeech")
    with open(root / "metadata.csv", encoding="utf-8", newline="") as file:
        lines = list(csv.reader(file, delimiter="|", quoting=csv.QUOTE_NONE))
    return [
        {
            "id": uid,
            "audio": str(resolve_audio(root / "wavs" / f"{uid}.wav")),
            "text": text,
            "speaker": "LJ",
        }
        for uid, _, text in lines[:count]
    ]


def test_guided_attention_loss_is_small_on_the_diagonal_and_ignores_padding():
    steps, characters = 40, 20
    # a hard monotonic alignment: step t attends to character floor(t * L / T)
    diagonal = torch.zeros(1, steps, characters)
    diagonal[0, torch.arange(steps), torch.arange(steps) * characters // steps] = 1.0
    anti_diagonal = diagonal.flip(-1)
    uniform = torch.full((1, steps, characters), 1.0 / characters)
    mel_lengths, token_lengths = torch.tensor([steps]), torch.tensor([characters])
    diagonal_loss = guided_attention_loss(diagonal, mel_lengths, token_lengths)
    assert float(diagonal_loss) < 0.02
    assert float(guided_attention_loss(uniform, mel_lengths, token_lengths)) > 0.4
    assert float(guided_attention_loss(anti_diagonal, mel_lengths, token_lengths)) > 0.7
    # the same alignment inside a padded batch (garbage in the padding) gives the same value
    padded = torch.rand(2, steps + 7, characters + 5)
    padded[0, :steps, :characters] = diagonal[0]
    padded[1, :steps, :characters] = diagonal[0]
    lengths = (torch.tensor([steps, steps]), torch.tensor([characters, characters]))
    assert torch.allclose(guided_attention_loss(padded, *lengths), diagonal_loss)


def test_mel_and_stop_losses_ignore_padding():
    target = torch.randn(1, 80, 30)
    prediction = target + 0.5
    logits = torch.randn(1, 30)
    lengths = torch.tensor([30])
    padded_target = torch.cat([target, torch.randn(1, 80, 9)], dim=2)
    padded_prediction = torch.cat([prediction, torch.randn(1, 80, 9)], dim=2)
    padded_logits = torch.cat([logits, torch.randn(1, 9)], dim=1)
    for kind in ("l1", "mse"):
        reference = masked_mel_loss(prediction, target, lengths, kind)
        assert torch.allclose(
            masked_mel_loss(padded_prediction, padded_target, lengths, kind), reference
        )
    assert float(masked_mel_loss(prediction, target, lengths, "l1")) == pytest.approx(0.5)
    assert torch.allclose(stop_token_loss(padded_logits, lengths), stop_token_loss(logits, lengths))
    # a confident, correct stop token costs almost nothing
    perfect = torch.full((1, 30), -20.0)
    perfect[0, -1] = 20.0
    assert float(stop_token_loss(perfect, lengths)) < 1e-6


@pytest.fixture(scope="module")
def demo_batch():
    rows = _ljspeech_rows(3)
    dataset = TTSDataset(rows, sample_rate=22050, speaker_ids={"LJ": 1})
    return collate_tts([dataset[index] for index in range(len(dataset))])


def test_tiny_model_trains_on_a_padded_demo_batch(demo_batch):
    torch.manual_seed(0)
    model = TacotronTTS(TacotronConfig.preset("tiny", num_speakers=2))
    assert len(set(demo_batch.token_lengths.tolist())) > 1  # texts of different lengths
    assert len(set(demo_batch.lengths.tolist())) > 1  # and audio of different lengths
    loss, metrics = model(demo_batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(metrics) >= {
        "loss_mel_before",
        "loss_mel_after",
        "loss_stop",
        "loss_guided_attention",
    }
    loss.backward()
    trained = [name for name, p in model.named_parameters() if p.grad is not None]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert "speaker_embedding.weight" in trained and len(trained) == len(list(model.parameters()))
    # only the speaker actually in the batch receives a gradient
    grad = model.speaker_embedding.weight.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0


def test_few_steps_reduce_the_loss(demo_batch):
    torch.manual_seed(0)
    # 4 frames per step and 0.6 s of audio keep this to a few decoder steps per update
    model = TacotronTTS(TacotronConfig.preset("tiny", num_speakers=2, frames_per_step=4))
    batch = replace(
        demo_batch, wav=demo_batch.wav[:, :13230], lengths=demo_batch.lengths.clamp_max(13230)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_synthesize_returns_finite_mels_and_per_sentence_alignments():
    torch.manual_seed(0)
    model = TacotronTTS(TacotronConfig.preset("tiny", num_speakers=3))
    texts = ["Printed in 1858.", "Hi."]
    out = model.synthesize(texts, speaker=torch.tensor([2, 0]), max_decoder_steps=12)
    r = model.config.frames_per_step
    assert out.mel.shape[:2] == (2, 80) and torch.isfinite(out.mel).all()
    assert out.mel_lengths.max() <= 12 * r and out.mel.shape[2] <= 12 * r
    assert out.alignments.shape[0] == 2 and out.alignments.shape[1] == out.mel.shape[2] // r
    expected_lengths = [len(model.frontend.encode(text)) for text in texts]
    assert out.token_lengths.tolist() == expected_lengths
    # batch order is restored: the short sentence never attends past its own characters
    assert out.alignments[1, :, expected_lengths[1] :].abs().sum() == 0
    valid_steps = int(out.mel_lengths[0]) // r
    row_sums = out.alignments[0, :valid_steps, : expected_lengths[0]].sum(dim=1)
    assert torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4)
    assert out.stopped.dtype == torch.bool
    assert model.training  # synthesize restores the training mode
    with pytest.raises(ValueError, match="speaker ids"):
        model.synthesize("Hi.", speaker=3)


def test_fine_tuning_model_starts_from_the_pretrained_weights(tmp_path):
    torch.manual_seed(0)
    config = TacotronConfig.preset("tiny", num_speakers=4)
    pretrained = TacotronTTS(config)
    with torch.no_grad():  # make the weights unlike a fresh initialisation
        for parameter in pretrained.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    path = tmp_path / "pretrained.pt"
    torch.save({"model": pretrained.state_dict(), "step": 10}, path)

    torch.manual_seed(1)
    fine_tuned = TacotronTTS(TacotronConfig.preset("tiny", num_speakers=4))
    fine_tuned.load_pretrained(torch.load(path, weights_only=True))
    target = fine_tuned.add_speaker(init="mean")
    assert target == 4 and fine_tuned.config.num_speakers == 5
    new_parameters = dict(fine_tuned.named_parameters())
    for name, parameter in pretrained.named_parameters():
        if name == "speaker_embedding.weight":
            assert torch.equal(new_parameters[name][:4], parameter)
            assert torch.allclose(new_parameters[name][4], parameter.mean(dim=0))
        else:
            assert torch.equal(new_parameters[name], parameter), name
    # the enlarged model is rebuilt from its spec with the new speaker count
    rebuilt = TacotronTTS.from_spec(fine_tuned.spec())
    rebuilt.load_pretrained(fine_tuned.state_dict())
    with pytest.raises(ValueError, match="do not fit this TacotronTTS config"):
        TacotronTTS(TacotronConfig.preset("tiny", num_speakers=2)).load_pretrained(
            pretrained.state_dict()
        )


def test_config_presets_and_validation():
    base, tiny = TacotronConfig.preset("base"), TacotronConfig.preset("tiny")
    assert base.encoder_embedding_dim == 512 and base.decoder_rnn_dim == 1024
    assert tiny.n_mels == base.n_mels == 80
    tiny_size = sum(p.numel() for p in TacotronTTS(tiny).parameters())
    assert tiny_size < 1_000_000
    with pytest.raises(ValueError, match="preset"):
        TacotronConfig.preset("huge")
    with pytest.raises(ValueError, match="mel_loss"):
        TacotronTTS(TacotronConfig(mel_loss="l3"))
