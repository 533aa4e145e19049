"""benchmarks/gpu_suite.py runs every part on tiny sizes on a CPU and reports what it ran.

The suite is meant for a GPU window of a few minutes; this test keeps its code working in
between: every part at ``--quick`` sizes (torch.compile left out: its CPU figures come from
``benchmarks/encoder.py --compile`` and ``benchmarks/pretrain.py --compile``), then one part
again to check that a resumed run merges into the same report.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_suite():
    sys.path.insert(0, str(BENCHMARKS))  # the suite imports its sibling scripts
    try:
        import gpu_suite

        yield gpu_suite
    finally:
        sys.path.remove(str(BENCHMARKS))


def _rows(part: dict) -> dict:
    return {row["case"]: row for row in part["rows"]}


@pytest.mark.slow  # every benchmark part, end to end
def test_quick_cpu_run_reports_every_part(gpu_suite, tmp_path):
    first = [name for name in gpu_suite.PARTS if name != "ddp"]
    common = ["--device", "cpu", "--quick", "--threads", "1", "--no-compile", "--out"]
    assert gpu_suite.main([*common, str(tmp_path), "--only", *first]) == 0
    assert gpu_suite.main([*common, str(tmp_path), "--only", "ddp"]) == 0  # resumes, merges
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    parts = report["parts"]
    assert list(parts) == list(gpu_suite.PARTS)
    assert all(part["status"] == "ok" and part["quick"] for part in parts.values())

    features = _rows(parts["features"])
    for feature in ("Fbank", "MFCC", "LogMel"):
        row = features[f"ours {feature}, batched on cpu"]
        assert row["audio s/s"] > 0 and re.fullmatch(r"\d+\.\dx .+", row["vs peer"])
    assert features["kaldi.fbank, per utterance (cpu)"]["audio s/s"] > 0

    ours = _rows(parts["kmeans"])["speechssl KMeans fit + predict (cpu)"]
    assert ours["step (s)"] > 0 and "sklearn (extrapolated)" in ours["vs peer"]
    # the same data and k: our inertia is within a few percent of scikit-learn's
    inertia_ratio = float(re.search(r"sample: ([\d.]+)x", ours["note"]).group(1))
    assert 0.8 < inertia_ratio < 1.1

    encoder = _rows(parts["encoder"])
    eager = encoder["hubert_tiny fwd+bwd bf16, eager, SDPA default"]
    assert eager["tokens/s"] > 0 and eager["vs peer"] == "1.00x eager"
    assert "hubert_tiny fwd+bwd bf16, eager, SDPA MATH only" in encoder
    if "wavlm_tiny" not in gpu_suite.PRESETS:  # named as skipped, not silently dropped
        assert "wavlm_tiny: not in speechssl.encoders" in parts["encoder"]["note"]

    pretrain = _rows(parts["pretrain"])
    assert len(pretrain) == 3
    for row in pretrain.values():
        assert row["tokens/s"] > 0 and row["audio s/s"] > 0 and "x torchaudio" in row["vs peer"]

    (largest,) = parts["max_batch"]["rows"]
    assert int(largest["batch"].split(" x ")[0]) >= 1

    paths = _rows(parts["train_paths"])
    assert "fused AdamW: True" in paths["Trainer hubert_tiny, bf16"]["note"]
    assert "grad scaler: on" in paths["Trainer hubert_tiny, fp16"]["note"]

    (ddp,) = parts["ddp"]["rows"]
    assert "GLOO" in ddp["case"] and "identical weights" in ddp["note"]

    markdown = (tmp_path / "gpu_suite.md").read_text()
    assert markdown.count("\n| ") >= sum(len(part["rows"]) + 1 for part in parts.values())
    for name in gpu_suite.PARTS:
        assert f"| {name} | **ok**" in markdown
