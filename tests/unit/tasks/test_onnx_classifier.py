"""The exported ONNX classifier run through its documented wrapper
(:class:`speechssl.tasks.export.OnnxClassifier`): the torch model's probabilities for good
inputs, one ``ValueError`` for lengths outside a clip, soundfile's dtypes converted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechssl.encoders.onnx_export import export_onnx
from speechssl.heads import ClassifierHeadConfig, FbankUpstream, build_transfer_model
from speechssl.tasks.export import ClassifierGraph, OnnxClassifier


@pytest.fixture(scope="module")
def onnx_classifier(tmp_path_factory):
    """An FBANK + mean-pool classifier exported as ``speechssl export RUN --format onnx``
    writes it, with its torch twin."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_transfer_model(
        ClassifierHeadConfig(projector_dim=8), FbankUpstream(n_mels=24), num_classes=3
    ).eval()
    folder = export_onnx(
        ClassifierGraph(model),
        tmp_path_factory.mktemp("onnx") / "classifier",
        family="fbank",
        config={},
        output_names=("probabilities",),
        extra={"labels": ["a", "b", "c"]},
    )
    return OnnxClassifier(folder), model


def test_onnx_classifier_refuses_lengths_outside_one_clip(onnx_classifier):
    classifier, model = onnx_classifier
    wav = torch.randn(2, 4000) * 0.1
    good = classifier(wav.numpy(), np.array([4000, 3000]))
    with torch.no_grad():
        expected = torch.softmax(model.logits(wav, torch.tensor([4000, 3000])), dim=-1)
    np.testing.assert_allclose(good, expected.numpy(), atol=1e-4)
    for lengths in ([5000, 3000], [0, 3000], [-4, 3000], [100, 3000]):
        with pytest.raises(ValueError, match=r"lengths must lie in \[1600, 4000\]"):
            classifier(wav.numpy(), np.array(lengths))
    with pytest.raises(ValueError, match="one per clip"):
        classifier(wav.numpy(), np.array([4000]))
    # soundfile's float64 and int16 are taken as the encoders take them
    pcm = (wav * 32768).round().to(torch.int16).numpy()
    np.testing.assert_allclose(
        classifier(pcm, np.array([4000, 3000])),
        classifier(pcm.astype(np.float32) / 32768, np.array([4000, 3000])),
        atol=1e-6,
    )
