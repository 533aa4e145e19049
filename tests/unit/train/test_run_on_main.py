"""Rank-aware recipe stages under a 2-process torchrun (gloo): files written once, by rank 0.

One launch of ``rank_script.py`` runs, on both ranks, the hubert_sat recipe's
iteration-1 target stage (manifests, MFCC k-means, labels) and the bare helpers of
``speechssl.train.distributed``; each rank reports what it saw.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechssl.cluster import KMeans
from speechssl.data.frame_labels import label_paths
from speechssl.data.manifest import write_jsonl
from speechssl.targets import ensure_frame_labels
from speechssl.testing import write_tone

SCRIPT = Path(__file__).resolve().parent / "rank_script.py"
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(SCRIPT),
        str(out),
        "debug=tiny",
        f"run_dir={out / 'run'}",
        "pretrain.max_utterances=24",
        "labels.mfcc_clusters=8",
    ]
    completed = subprocess.run(
        command, env=ENVIRONMENT, capture_output=True, text=True, timeout=240, check=False
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    seen = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    return out, seen


def test_main_process_first_writes_once_on_rank_0_and_both_ranks_read_it(two_ranks):
    out, (rank0, rank1) = two_ranks
    # rank 1 entered the block only after rank 0 had written the file
    assert rank0["helpers"]["first_entered_with_file"] is False
    assert rank1["helpers"]["first_entered_with_file"] is True
    assert rank0["helpers"]["first_content"] == rank1["helpers"]["first_content"]
    assert rank1["helpers"]["first_content"] == "written by rank 0"
    # run_on_main: only rank 0 ran the function; both ranks got its result
    assert rank0["helpers"]["run_on_main"] == rank1["helpers"]["run_on_main"]
    assert rank1["helpers"]["run_on_main"] == {"rank": 0, "content": "written by rank 0"}
    writes = (out / "writes.log").read_text().splitlines()
    assert writes == ["0 wrote a.txt", "0 wrote b.txt"]


def test_a_failure_on_either_rank_raises_on_both_instead_of_hanging(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert rank0["helpers"]["first_fails_on_0"] == "ValueError: bad data on rank 0"
    assert rank1["helpers"]["first_fails_on_0"] == (
        "RuntimeError: rank 0 failed in a failing stage: ValueError: bad data on rank 0"
    )
    assert rank0["helpers"]["first_fails_on_1"] == (
        "RuntimeError: rank 1 failed in a failing stage: ValueError: bad data on rank 1"
    )
    assert rank1["helpers"]["first_fails_on_1"] == "ValueError: bad data on rank 1"
    assert rank0["helpers"]["run_on_main_fails"] == "ValueError: bad data on rank 0"
    assert rank1["helpers"]["run_on_main_fails"].startswith("RuntimeError: rank 0 failed in")


def test_continue_on_main_only_leaves_rank_0_alone_as_a_single_process(two_ranks):
    _, (rank0, rank1) = two_ranks
    assert (rank0["helpers"]["continue"], rank1["helpers"]["continue"]) == (True, False)
    # the group is gone and a later Trainer's init_from_env starts none
    for seen in (rank0, rank1):
        assert seen["helpers"]["world_after"] == 1
        assert seen["helpers"]["initialized_after"] is False


def test_hubert_sat_targets_are_fitted_and_labelled_once_by_rank_0(two_ranks):
    out, (rank0, rank1) = two_ranks
    calls = (out / "calls.log").read_text().splitlines()
    assert calls == ["0 fit", "0 label train.jsonl", "0 label valid.jsonl"]
    assert rank0["labels"] == rank1["labels"]  # rank 1 loaded what rank 0 wrote
    assert len(rank0["labels"]["train_frames"]) == 24
    # every write went through a temporary file of its own and was renamed
    assert not [path for path in (out / "run").rglob("*") if ".tmp" in path.name]


def test_an_interrupted_label_write_keeps_the_old_file_and_no_temporary(tmp_path):
    rows = [
        {
            "id": f"u{index}",
            "audio": str(write_tone(tmp_path / f"u{index}.wav", 0.2, 16000)),
            "duration": 0.2,
            "sample_rate": 16000,
        }
        for index in range(3)
    ]
    manifest = tmp_path / "train.jsonl"
    write_jsonl(manifest, rows)
    kmeans = KMeans(2, seed=0, device="cpu").fit(torch.randn(50, 3))
    calls = []

    def features(wav, lengths):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("feature extractor failed")
        return torch.randn(1, 4, 3), torch.tensor([4])

    out = label_paths(manifest, "toy")[0]
    out.write_text("old labels\n")
    with pytest.raises(ValueError, match="feature extractor failed"):
        ensure_frame_labels(manifest, kmeans, features, tag="toy", label_rate=25)
    assert out.read_text() == "old labels\n"
    kmeans.save(tmp_path / "kmeans.pt")
    assert sorted(path.name for path in tmp_path.iterdir() if ".tmp" in path.name) == []
