import numpy as np
import pytest
import torch
from PIL import Image

from speechssl.data.collate import Batch
from speechssl.tasks.plots import plot_confusion_matrix, plot_layer_weights, plot_tsne
from speechssl.tasks.speaker import (
    Trial,
    collect_outputs,
    identification_accuracy,
    read_trials,
    score_trials,
    verification_eer,
)


def clustered_embeddings(num_speakers=4, per_speaker=5, dim=8, spread=0.3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_speakers, dim, generator=generator)
    embeddings, speakers = {}, {}
    for speaker in range(num_speakers):
        for index in range(per_speaker):
            name = f"spk{speaker}/utt{index}"
            embeddings[name] = centres[speaker] + spread * torch.randn(dim, generator=generator)
            speakers[name] = speaker
    return embeddings, speakers


def all_trials(speakers):
    names = sorted(speakers)
    return [
        Trial(int(speakers[a] == speakers[b]), a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]


def test_cosine_scoring_and_verification():
    embeddings, speakers = clustered_embeddings()
    trials = all_trials(speakers)
    scores, labels = score_trials(embeddings, trials)
    first = trials[0]
    expected = torch.nn.functional.cosine_similarity(
        embeddings[first.enroll], embeddings[first.test], dim=0
    )
    assert scores[0].item() == pytest.approx(expected.item(), abs=1e-6)
    assert labels.sum() == sum(trial.label for trial in trials)
    tight = verification_eer(embeddings, trials)
    assert tight["eer"] < 0.05 and tight["num_trials"] == len(trials)
    noisy = verification_eer(clustered_embeddings(spread=3.0)[0], trials)
    assert noisy["eer"] > tight["eer"]
    with pytest.raises(ValueError, match="have no embedding"):
        score_trials(embeddings, [Trial(1, "spk0/utt0", "unknown")])


def test_adaptive_snorm_matches_a_direct_computation():
    embeddings, speakers = clustered_embeddings()
    trials = all_trials(speakers)[:10]
    cohort = torch.randn(30, 8, generator=torch.Generator().manual_seed(5))
    scores, _ = score_trials(embeddings, trials, cohort=cohort, top_k=7)
    raw, _ = score_trials(embeddings, trials)
    normalised_cohort = torch.nn.functional.normalize(cohort, dim=1)
    for row, trial in enumerate(trials[:3]):
        sides = []
        for name in (trial.enroll, trial.test):
            cosines = normalised_cohort @ torch.nn.functional.normalize(embeddings[name], dim=0)
            top = cosines.sort(descending=True).values[:7]
            sides.append((raw[row] - top.mean()) / top.std())
        assert scores[row].item() == pytest.approx(((sides[0] + sides[1]) / 2).item(), rel=1e-4)


def test_read_trials(tmp_path):
    path = tmp_path / "veri_test.txt"
    path.write_text(
        "1 id10270/a/00001.wav id10270/b/00002.wav\n0 id10270/a/00001.wav id10300/c/00001.wav\n"
    )
    assert read_trials(path) == [
        Trial(1, "id10270/a/00001.wav", "id10270/b/00002.wav"),
        Trial(0, "id10270/a/00001.wav", "id10300/c/00001.wav"),
    ]
    path.write_text("yes a b\n")
    with pytest.raises(ValueError, match="veri_test.txt:1"):
        read_trials(path)


def test_collect_outputs_restores_manifest_order_and_identification():
    batches = [
        Batch(torch.ones(2, 5), torch.tensor([5, 3]), torch.tensor([3, 0]), torch.tensor([1, 0])),
        Batch(torch.ones(2, 4), torch.tensor([4, 4]), torch.tensor([1, 2]), torch.tensor([2, 1])),
    ]

    def lengths_as_scores(wav, lengths):  # (B, 3) scores whose argmax depends on the length
        return torch.nn.functional.one_hot(lengths % 3, 3).float()

    outputs, indices, labels = collect_outputs(lengths_as_scores, batches)
    assert indices.tolist() == [0, 1, 2, 3] and labels.tolist() == [0, 2, 1, 1]
    assert outputs.argmax(1).tolist() == [0, 1, 1, 2]  # lengths 3, 4, 4, 5 mod 3
    result = identification_accuracy(outputs, labels)
    assert result == {"top1": 0.5, "num_utterances": 4}


def check_png(path, min_size=(200, 150)):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5  # something was drawn, not a blank canvas


def test_plots_write_readable_pngs(tmp_path):
    cm = np.array([[20, 3, 1, 0], [4, 15, 2, 1], [0, 2, 25, 3], [1, 0, 2, 18]])
    check_png(plot_confusion_matrix(cm, ["neu", "hap", "ang", "sad"], tmp_path / "cm.png"))
    check_png(plot_confusion_matrix(cm, list("abcd"), tmp_path / "counts.png", normalize=False))
    check_png(
        plot_layer_weights(torch.softmax(torch.randn(13), 0), tmp_path / "sub" / "w.png", "weights")
    )
    embeddings, speakers = clustered_embeddings(num_speakers=3, per_speaker=3)
    names = sorted(embeddings)  # N = 9: perplexity must adapt below sklearn's default of 30
    points = torch.stack([embeddings[name] for name in names])
    check_png(plot_tsne(points, [speakers[name] for name in names], tmp_path / "tsne.png"))
    with pytest.raises(ValueError, match="cm must be"):
        plot_confusion_matrix(cm, ["a", "b"], tmp_path / "bad.png")
