"""Tacotron's decoder is thousands of tiny sequential ops: on a shared 2-core machine the
intra-op thread pool only adds spin-wait contention (a step ran 50x slower with 2 threads
under load), so the TTS tests run single-threaded and restore the setting afterwards."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
