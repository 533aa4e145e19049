"""speechssl.cluster.KMeans: parity with scikit-learn, streaming fits, storage, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from speechssl import audio
from speechssl import cluster as cluster_module
from speechssl.cluster import KMeans
from speechssl.targets import ensure_frame_labels


@pytest.fixture(scope="module")
def blobs():
    frames, truth = make_blobs(
        n_samples=3000, centers=8, n_features=6, cluster_std=1.0, random_state=0
    )
    return frames.astype(np.float32), truth


@pytest.fixture(scope="module")
def fitted(blobs):
    return KMeans(8, device="cpu", seed=0).fit(blobs[0])


def test_recovers_planted_clusters(blobs, fitted):
    frames, truth = blobs
    labels = fitted.predict(frames)
    assert labels.dtype == torch.int64 and labels.shape == (len(frames),)
    assert adjusted_rand_score(truth, labels.numpy()) > 0.99


def test_inertia_matches_sklearn_kmeans():
    # Unstructured data: many local optima, so this compares seeding + Lloyd quality; both
    # run to convergence (tol=0) from one seeding, and the median over seeds is compared.
    frames = np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32)
    ratios = []
    with threadpool_limits(limits=1):  # sklearn's thread pool is slow on a busy 2-core box
        for seed in range(5):
            ours = KMeans(16, device="cpu", seed=seed, tol=0.0).fit(frames)
            reference = SklearnKMeans(16, n_init=1, random_state=seed).fit(frames)
            ratios.append(ours.inertia_ / reference.inertia_)
    assert np.median(ratios) <= 1.01 and max(ratios) <= 1.03
    # inertia_ is the sum over the fit frames, as sklearn's; inertia(X) recomputes it.
    assert ours.inertia(frames) == pytest.approx(ours.inertia_, rel=1e-6)
    assert ours.inertia(frames) == pytest.approx(-reference.score(frames), rel=0.03)


def test_fit_is_deterministic_on_cpu(blobs, fitted):
    again = KMeans(8, device="cpu", seed=0).fit(blobs[0])
    assert torch.equal(again.cluster_centers_, fitted.cluster_centers_)


def test_chunk_iterable_fit_equals_tensor_fit(blobs, fitted):
    frames = blobs[0]
    chunks = [frames[start : start + 700] for start in range(0, len(frames), 700)]
    from_list = KMeans(8, device="cpu", seed=0).fit(chunks)
    from_generator = KMeans(8, device="cpu", seed=0).fit(chunk for chunk in chunks)
    assert torch.equal(from_list.cluster_centers_, fitted.cluster_centers_)
    assert torch.equal(from_generator.cluster_centers_, fitted.cluster_centers_)


def test_reservoir_sample_fit_approaches_full_fit(blobs, fitted):
    frames, truth = blobs
    chunks = (frames[start : start + 500] for start in range(0, len(frames), 500))
    sampled = KMeans(8, device="cpu", seed=0, max_fit_frames=1200).fit(chunks)
    assert sampled.inertia(frames) <= 1.02 * fitted.inertia_
    assert adjusted_rand_score(truth, sampled.predict(frames).numpy()) > 0.99


def test_subsample_seeding_and_large_tensor_sampling(blobs, fitted):
    frames, truth = blobs
    # init_size < N: seedings refined on 500-frame subsamples, the best finished on all.
    refined = KMeans(8, device="cpu", seed=0, init_size=500, n_init=2).fit(frames)
    # N > max_fit_frames: Lloyd on a uniform sample without replacement.
    sampled = KMeans(8, device="cpu", seed=0, max_fit_frames=1000).fit(torch.from_numpy(frames))
    for model in (refined, sampled):
        assert adjusted_rand_score(truth, model.predict(frames).numpy()) > 0.99
        assert model.inertia(frames) <= 1.01 * fitted.inertia_


def test_minibatch_stream_and_tensor(blobs, fitted):
    frames, truth = blobs
    stream = (frames[start : start + 256] for start in range(0, len(frames), 256))
    on_stream = KMeans(
        8, algorithm="minibatch", batch_size=500, init_size=1000, seed=0, device="cpu"
    )
    on_stream.fit(stream)
    on_tensor = KMeans(
        8, algorithm="minibatch", batch_size=500, max_iter=20, seed=0, device="cpu"
    ).fit(frames)
    for model in (on_stream, on_tensor):
        assert adjusted_rand_score(truth, model.predict(frames).numpy()) > 0.99
        assert model.inertia(frames) <= 1.02 * fitted.inertia_


def test_empty_clusters_are_reseeded(blobs, monkeypatch):
    frames, truth = blobs

    def collapsed_seeding(points, n_clusters, generator, num_local_trials=None):
        # Every center on one point: all but the first cluster start empty.
        return points[:1].repeat(n_clusters, 1), 0.0

    monkeypatch.setattr(cluster_module, "kmeans_plusplus", collapsed_seeding)
    model = KMeans(8, device="cpu", seed=0).fit(frames)
    labels = model.predict(frames).numpy()
    assert len(np.unique(labels)) == 8
    assert adjusted_rand_score(truth, labels) > 0.9


def test_save_load_round_trip(tmp_path, blobs, fitted):
    path = tmp_path / "km.pt"
    fitted.save(path)
    loaded = KMeans.load(path, device="cpu")
    assert loaded.fingerprint == fitted.fingerprint and len(fitted.fingerprint) == 12
    assert torch.equal(loaded.predict(blobs[0]), fitted.predict(blobs[0]))
    assert loaded.n_clusters == 8 and loaded.inertia_ == fitted.inertia_
    other = KMeans(8, device="cpu", seed=1).fit(blobs[0][::2])
    assert other.fingerprint != fitted.fingerprint


def test_truncated_or_foreign_file_refused(tmp_path, fitted):
    path = tmp_path / "km.pt"
    fitted.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        KMeans.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a speechssl k-means file"):
        KMeans.load(foreign)
    with pytest.raises(ValueError, match="not found"):
        KMeans.load(tmp_path / "missing.pt")


def test_bad_input_raises_value_error(fitted):
    good = np.zeros((20, 6), dtype=np.float32)
    with_nan = good.copy()
    with_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KMeans(2, device="cpu").fit(with_nan)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        KMeans(2, device="cpu").fit(np.zeros(20, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        KMeans(2, device="cpu").fit(torch.zeros(2, 10, 6))
    with pytest.raises(ValueError, match="n_clusters"):
        KMeans(21, device="cpu").fit(good)
    with pytest.raises(ValueError, match="n_clusters"):
        KMeans(0)
    with pytest.raises(ValueError, match="D=5"):
        fitted.predict(np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="not fitted"):
        KMeans(2, device="cpu").predict(good)
    with pytest.raises(ValueError, match="empty iterable"):
        KMeans(2, device="cpu").fit(iter([]))
    with pytest.raises(ValueError, match="chunk 1 has D=5"):
        KMeans(2, device="cpu").fit([good, np.zeros((4, 5), dtype=np.float32)])
    with pytest.raises(ValueError, match="tensor/ndarray or an iterable"):
        KMeans(2, device="cpu").fit(3.0)


def _frame_features(wav: torch.Tensor, lengths: torch.Tensor):
    """Toy feature function: (1, T) -> (1, F, 2) mean and log-energy of 160-sample frames."""
    num_frames = int(lengths[0]) // 160
    frames = wav[:, : num_frames * 160].reshape(1, num_frames, 160)  # (1, T) -> (1, F, 160)
    features = torch.stack([frames.mean(-1), (frames.pow(2).mean(-1) + 1e-8).log()], dim=-1)
    return features, torch.tensor([num_frames])


def test_labelling_a_manifest_writes_one_line_per_utterance(tmp_path):
    generator = torch.Generator().manual_seed(0)
    rows = []
    for index, (seconds, scale) in enumerate([(0.3, 0.01), (0.5, 0.3), (0.2, 1.0)]):
        path = tmp_path / f"utt{index}.wav"
        audio.save(path, torch.randn(int(seconds * 16000), generator=generator) * scale, 16000)
        rows.append(
            {"id": f"utt{index}", "audio": str(path), "duration": seconds, "sample_rate": 16000}
        )
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not really audio")
    rows.insert(1, {"id": "bad", "audio": str(corrupt), "duration": 1.0, "sample_rate": 16000})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))

    features = [
        _frame_features(
            audio.load(row["audio"]).unsqueeze(0), torch.tensor([len(audio.load(row["audio"]))])
        )[0][0]
        for row in rows
        if row["id"] != "bad"
    ]
    model = KMeans(3, device="cpu", seed=0).fit(torch.cat(features))
    # labelling a manifest is the targets module's job (cluster.py is a pure algorithm)
    out_path = ensure_frame_labels(manifest, model, _frame_features, tag="toy", label_rate=100)
    report = json.loads(out_path.with_name(out_path.name + ".json").read_text())

    lines = out_path.read_text().split("\n")[:-1]
    assert len(lines) == 4 and lines[1] == ""
    assert report["num_utterances"] == 4
    assert [row["id"] for row in report["unreadable"]] == ["bad"]
    expected = [model.predict(feature).tolist() for feature in features]
    assert [list(map(int, line.split())) for line in (lines[0], lines[2], lines[3])] == expected
    assert report["num_frames"] == sum(len(labels) for labels in expected)
    assert not [path for path in tmp_path.iterdir() if ".tmp" in path.name]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu(blobs, fitted):
    frames = blobs[0]
    on_gpu = KMeans(8, device="cuda", seed=0).fit(frames)
    assert on_gpu.predict(frames).device.type == "cpu"
    assert (
        adjusted_rand_score(fitted.predict(frames).numpy(), on_gpu.predict(frames).numpy()) > 0.99
    )
