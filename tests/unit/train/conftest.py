import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_toy import corpus_rows


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """``(rows, path of a JSON file with them)`` for 16 utterances of the demo corpus."""
    folder = tmp_path_factory.mktemp("corpus")
    rows = corpus_rows(folder / "audio")
    path = folder / "corpus.json"
    path.write_text(json.dumps(rows))
    return rows, path
