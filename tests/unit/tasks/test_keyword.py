"""The keyword task: speaker-independent spoken-word recognition (SUPERB KS style)."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.cli import main
from speechssl.data.loaders import load_manifests, prepared_folder
from speechssl.demo import demo_path
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.heads.linear_probe import LinearProbeConfig
from speechssl.tasks.evaluate import task_data
from speechssl.tasks.suite import Suite, Upstream, shared_speakers
from speechssl.testing import make_speech_commands_tree, speech_commands_subset

SPLITS = ("train", "dev", "test")


@pytest.fixture()
def one_thread():
    # the probe's small L-BFGS fits run several times faster on one thread of a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_demo_keyword_splits_share_no_speaker_and_hold_every_word(tmp_path):
    folder = prepared_folder(
        "speech_commands", demo_path("speech_commands"), tmp_path, verify=False
    )
    splits = {name: load_manifests([folder / f"{name}.jsonl"]) for name in SPLITS}
    assert shared_speakers(splits) == {}
    words = [set(split.column("label").values()) for split in splits.values()]
    assert len(words[0]) == 10 and words[0] == words[1] == words[2]
    assert all(len(split) > 0 for split in splits.values())


def test_the_keyword_task_reads_the_demo_unless_told_otherwise(tmp_path):
    assert task_data("keyword", None) == demo_path("speech_commands")
    assert task_data("keyword", tmp_path) == tmp_path
    with pytest.raises(ValueError, match="--task emotion needs --data"):
        task_data("emotion", None)


def test_a_speaker_in_two_splits_is_refused_in_one_line(tmp_path):
    folder = prepared_folder("speech_commands", make_speech_commands_tree(tmp_path), tmp_path)
    train, dev, test = (load_manifests([folder / f"{name}.jsonl"]) for name in SPLITS)
    assert shared_speakers({"train": train, "dev": dev, "test": test}) == {}
    suite = Suite(LinearProbeConfig(c_grid=[1.0]), run_dir=tmp_path / "suite")
    fbank = Upstream("fbank", lambda seed: FbankUpstream(n_mels=40))
    with pytest.raises(ValueError, match="speaker-disjoint; shared speakers train/test") as error:
        suite.keyword(fbank, train, dev, train.subset([0, 1]))
    assert "\n" not in str(error.value)


def test_a_fbank_probe_on_the_demo_keywords_beats_chance_and_writes_the_table(
    tmp_path, capsys, one_thread
):
    # 3 takes of each digit by each of the 6 speakers: 120 train, 30 dev, 30 test clips
    data = speech_commands_subset(demo_path("speech_commands"), tmp_path, takes=3)
    out = tmp_path / "out"
    code = main(["evaluate", "fbank", "--task", "keyword", "--data", str(data), "--out", str(out)])
    assert code == 0
    assert "| upstream | keyword accuracy (%)" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    cell = results["table"][0]
    assert (cell["task"], cell["upstream"], cell["n_items"]) == ("keyword", "fbank", 30)
    # 10 words: chance is 10 %; the interval's low end must clear it by a wide margin
    assert cell["ci95"][0] > 30.0, cell
    assert results["deltas"] == [] and (out / "results.md").is_file()
