"""A feature cache never answers for audio it did not encode (issue 24: stale caches).

The cache key covers each clip's size, mtime and the digest of its first and last
blocks, so clips replaced by noise of the same length (same size, even the same mtime)
are encoded again, and ``speechssl evaluate`` on the same ``--out`` gives the fresh answer.
"""

from __future__ import annotations

import json
import os

import numpy as np
import soundfile
import torch

from speechssl.cli import main
from speechssl.data.compact import Manifest
from speechssl.encoders.fbank_upstream import FbankUpstream
from speechssl.tasks.pooled import FeatureCache
from speechssl.testing import write_labelled_csv, write_tone


def _replace_by_noise(paths, seed=0):
    """Overwrite each clip by white noise of the same length, format and mtime."""
    rng = np.random.default_rng(seed)
    for path in paths:
        stat = os.stat(path)
        frames = soundfile.info(path).frames
        soundfile.write(path, (0.3 * rng.standard_normal(frames)).astype(np.float32), 16000)
        assert os.stat(path).st_size == stat.st_size  # same length, same size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_clips_replaced_by_noise_of_the_same_length_are_encoded_again(tmp_path):
    paths = [
        str(write_tone(tmp_path / f"u{i}.wav", 0.5, frequency=300 + 200 * i)) for i in range(4)
    ]
    rows = [
        {"id": f"u{i}", "audio": p, "duration": 0.5, "sample_rate": 16000}
        for i, p in enumerate(paths)
    ]
    manifest, upstream = Manifest.from_rows(rows), FbankUpstream(n_mels=40)
    before = FeatureCache(tmp_path / "cache").pooled(upstream, manifest)
    _replace_by_noise(paths)
    cache = FeatureCache(tmp_path / "cache")  # a new process: only the disk entries remain
    after = cache.pooled(upstream, manifest)
    assert cache.encoded_utterances == 4  # nothing came from the stale entry
    fresh = FeatureCache().pooled(upstream, manifest)
    assert torch.equal(after, fresh) and not torch.allclose(before, after)


def test_evaluate_on_the_same_out_answers_for_the_new_audio(tmp_path, capsys):
    sets, clips = {}, []
    for name, count in (("train", 6), ("valid", 3), ("test", 4)):
        rows = [
            (str(write_tone(tmp_path / name / f"{label}{i}.wav", 0.5, frequency=frequency)), label)
            for label, frequency in (("low", 300.0), ("high", 2500.0))
            for i in range(count)
        ]
        clips += [path for path, _ in rows]
        sets[name] = str(write_labelled_csv(tmp_path / f"{name}.csv", rows))

    def evaluate(out):
        arguments = ["evaluate", "fbank", "--task", "classify", "--data", sets["train"]]
        arguments += ["--valid", sets["valid"], "--test", sets["test"], "--out", str(out)]
        assert main(arguments) == 0
        return json.loads((out / "results.json").read_text())["table"][0]

    first = evaluate(tmp_path / "out")
    assert first["mean"] == 100.0  # tones of two pitches: separable
    _replace_by_noise(clips)
    again, fresh = evaluate(tmp_path / "out"), evaluate(tmp_path / "fresh")
    assert again["mean"] == fresh["mean"] and again["ci95"] == fresh["ci95"]
    assert again["mean"] < first["mean"]  # noise carries no pitch
