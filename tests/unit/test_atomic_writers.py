"""Writers through speechssl.safe_io: atomic_path, the encoder export and the streamed
HuBERT label file keep the old file whole when writing fails, and leave no temporary."""

import tracemalloc

import numpy as np
import pytest
import torch

import speechssl.loading
from speechssl.data.frame_labels import read_label_file, write_label_file
from speechssl.encoders import build_encoder
from speechssl.loading import load_encoder, save_encoder
from speechssl.safe_io import atomic_path, temporary_path


def test_atomic_path_renames_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "weights.bin"
    with atomic_path(path, durable=True) as temporary:
        assert temporary == temporary_path(path) and not path.exists()
        temporary.write_bytes(b"first")
    assert path.read_bytes() == b"first"
    with pytest.raises(RuntimeError, match="killed"), atomic_path(path) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"first"
    assert list(path.parent.iterdir()) == [path]


def test_a_failed_export_keeps_the_earlier_one(tmp_path, monkeypatch):
    torch.manual_seed(0)
    first = build_encoder("hubert_tiny").eval()
    save_encoder(first, tmp_path / "export")
    before = {path.name: path.read_bytes() for path in (tmp_path / "export").iterdir()}
    real_save_file = speechssl.loading.save_file

    def dies_half_way(state, filename, metadata=None):
        real_save_file(state, filename, metadata=metadata)
        with open(filename, "r+b") as file:
            file.truncate(100)  # the half-written weights of a killed or full-disk write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(speechssl.loading, "save_file", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_encoder(build_encoder("hubert_tiny"), tmp_path / "export")
    after = {path.name: path.read_bytes() for path in (tmp_path / "export").iterdir()}
    assert after == before  # no temporary left, both files as they were
    reloaded = load_encoder(tmp_path / "export")
    for name, value in first.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], value, rtol=0, atol=0)


def test_label_file_is_streamed(tmp_path):
    line = np.arange(100, 200)  # 100 three-digit labels: 400 bytes a line
    num_lines = 20_000  # 8 MB of text in all

    def labels():
        for _ in range(num_lines):
            yield line

    tracemalloc.start()
    try:
        path = write_label_file(tmp_path / "train.km", labels())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == num_lines * 400
    assert peak < 1_000_000, f"{peak} bytes held: the label text is not streamed"
    read = read_label_file(path)
    assert len(read) == num_lines and read[-1].tolist() == line.tolist()


def test_a_label_file_interrupted_mid_stream_keeps_the_old_one(tmp_path):
    path = write_label_file(tmp_path / "train.km", [np.array([1, 2]), np.array([], dtype=int)])

    def labels():
        yield np.array([7, 7, 7])
        raise RuntimeError("k-means failed on utterance 2")

    with pytest.raises(RuntimeError, match="utterance 2"):
        write_label_file(path, labels())
    assert path.read_text() == "1 2\n\n"
    assert list(tmp_path.iterdir()) == [path]
