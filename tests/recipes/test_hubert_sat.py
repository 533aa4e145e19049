"""Smoke test of recipes/hubert_sat: targets (two iterations), a two-arm ablation and every
downstream task run on the demo corpus and write their outputs; a second, smaller run
with the ECAPA speaker head."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import speechssl
from speechssl.cluster import KMeans
from speechssl.config import compose
from speechssl.data.frame_labels import read_label_file
from speechssl.data.manifest import read_jsonl
from speechssl.demo import demo_path
from speechssl.testing import iemocap_subset, speech_commands_subset

REPO = Path(__file__).resolve().parents[2]


# readers of the smoke runs' speaker set: every verification reader plus this many others
# (all 100 demo readers' 683 clips made each run spend minutes encoding speech)
EXTRA_READERS = 6


@pytest.fixture(scope="module")
def speaker_root(tmp_path_factory) -> Path:
    """A VoxCeleb1-layout subset of the demo's speaker set: the verification readers (all
    trials kept) plus ``EXTRA_READERS`` others, their folders linked, the lists filtered."""
    demo = demo_path("voxceleb1")
    root = tmp_path_factory.mktemp("voxceleb1_subset")
    trials = (demo / "veri_test.txt").read_text().splitlines()
    verification = {path.split("/")[0] for line in trials for path in line.split()[1:]}
    others = sorted({p.name for p in (demo / "wav").iterdir()} - verification)[:EXTRA_READERS]
    readers = verification | set(others)
    (root / "wav").mkdir()
    for reader in sorted(readers):
        (root / "wav" / reader).symlink_to(demo / "wav" / reader, target_is_directory=True)
    iden = [
        line
        for line in (demo / "iden_split.txt").read_text().splitlines()
        if line.split()[1].split("/")[0] in readers
    ]
    (root / "iden_split.txt").write_text("\n".join(iden) + "\n")
    (root / "veri_test.txt").write_text("\n".join(trials) + "\n")
    return root


def _speaker_set(root: Path) -> tuple[int, int, set[str]]:
    """(test clips in iden_split.txt, trials in veri_test.txt, verification speakers)."""
    iden = [line.split() for line in (root / "iden_split.txt").read_text().splitlines()]
    trials = [line.split() for line in (root / "veri_test.txt").read_text().splitlines()]
    verification = {path.split("/")[0] for line in trials for path in line[1:]}
    return sum(code == "3" for code, _ in iden), len(trials), verification


def _run_recipe(run_dir, *overrides):
    command = [
        sys.executable,
        str(REPO / "recipes" / "hubert_sat" / "run.py"),
        "debug=tiny",
        f"run_dir={run_dir}",
        *overrides,
    ]
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.fixture(scope="module")
def emotion_root(tmp_path_factory) -> Path:
    """The demo's EmoDB set cut to 3 takes per class and actor (every class and session)."""
    return iemocap_subset(
        demo_path("iemocap"), tmp_path_factory.mktemp("emotion") / "IEMOCAP_full_release"
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, speaker_root, emotion_root):
    run_dir = tmp_path_factory.mktemp("hubert_sat")
    emotion = emotion_root
    # the demo's spoken digits cut to 2 takes per word and speaker (every word and split)
    keyword = speech_commands_subset(
        demo_path("speech_commands"), tmp_path_factory.mktemp("kws"), 2
    )
    stdout = _run_recipe(
        run_dir,
        f"speaker.src={speaker_root}",
        f"emotion.src={emotion}",
        f"keyword.src={keyword}",
        "ablation=sat",
        "~arms.sat_no_contrastive",
        "~arms.sat_no_mixing",
        "labels.iterations=2",
        "labels.mfcc_clusters=8",
        "labels.hidden_clusters=8",
        "modes=[fbank,pretrained_frozen]",
        "emotion.max_folds=1",
        "pretrain.max_utterances=24",
        "data.max_batch_seconds=6",
        "data.max_duration=1.0",
        "trainer.eval_every=4",
    )
    return run_dir, stdout


@pytest.fixture(scope="module")
def ecapa_run(tmp_path_factory, speaker_root, emotion_root):
    """One pre-trained upstream, 2 steps everywhere, a narrow ECAPA (the default is
    512 x 4 + 1536 channels: minutes per run on a CPU). The encoder is WavLM: its
    pre-training is UniSpeech-SAT's masked prediction with utterance mixing."""
    run_dir = tmp_path_factory.mktemp("hubert_sat_ecapa")
    _run_recipe(
        run_dir,
        f"speaker.src={speaker_root}",
        f"emotion.src={emotion_root}",
        "keyword.src=null",
        "encoder=wavlm_tiny",
        "objective=unispeech_sat",
        "head=ecapa_tiny",
        "modes=[pretrained_frozen]",
        "emotion.max_folds=1",
        "pretrain.max_utterances=24",
        "labels.mfcc_clusters=8",
        "data.max_batch_seconds=6",
        "data.max_duration=1.0",
        "trainer.max_steps=2",
        "seeds=[0]",
    )
    return run_dir


@pytest.mark.slow  # a whole-recipe run
def test_results_table_covers_every_upstream_and_task(tiny_run, speaker_root):
    run_dir, stdout = tiny_run
    num_test, num_trials, _ = _speaker_set(speaker_root)
    results = json.loads((run_dir / "results.json").read_text())
    upstreams = ["fbank", "hubert_frozen", "unispeech_sat_frozen"]
    cells = {(row["upstream"], row["task"], row["metric"]): row for row in results["table"]}
    for name in upstreams:
        for task, metric in [
            ("speaker_id", "accuracy"),
            ("speaker_verification", "eer"),
            ("emotion", "accuracy"),
            ("emotion", "ua"),
            ("keyword", "accuracy"),
        ]:
            cell = cells[name, task, metric]
            low, high = cell["ci95"]
            assert 0.0 <= low <= cell["mean"] <= high <= 100.0
        assert cells[name, "speaker_id", "accuracy"]["n_items"] == num_test
        assert cells[name, "speaker_verification", "eer"]["n_items"] == num_trials
        assert (run_dir / f"tsne_{name}.png").stat().st_size > 1000
        # the probe is deterministic: one seed per fixed upstream, one per pre-training run
        assert cells[name, "emotion", "ua"]["n_seeds"] == 1
        assert results["heads"][name] == {"speaker_id": "linear_probe", "emotion": "linear_probe"}
    # every arm against each baseline and against the full model, on the same items
    pairs = {(delta["a"], delta["b"], delta["task"]) for delta in results["deltas"]}
    assert ("unispeech_sat_frozen", "fbank", "speaker_id") in pairs
    assert ("hubert_frozen", "fbank", "emotion") in pairs
    assert ("hubert_frozen", "fbank", "keyword") in pairs
    assert cells["fbank", "keyword", "accuracy"]["n_items"] == 20  # 10 words x 2 takes
    assert ("hubert_frozen", "unispeech_sat_frozen", "speaker_id") in pairs  # arm - full model
    for delta in results["deltas"]:
        assert delta["ci95"][0] <= delta["delta"] <= delta["ci95"][1]
    assert (run_dir / "probe_layers_speaker_id_unispeech_sat_frozen.png").is_file()
    assert (run_dir / "probe_layers_emotion_hubert_frozen.png").is_file()
    assert (run_dir / "results.png").is_file()
    assert "| upstream | speaker ID top-1 (%) |" in stdout
    assert "| unispeech_sat_frozen |" in (run_dir / "results.md").read_text()


@pytest.mark.slow  # a whole-recipe run
def test_labels_beside_manifests_use_the_train_kmeans_for_both_splits(tiny_run, speaker_root):
    run_dir, _ = tiny_run
    pretrain = json.loads((run_dir / "results.json").read_text())["pretrain"]
    data = run_dir / "data" / "pretrain"
    for tag, iteration, rate in (
        ("iter1_mfcc", "iteration1", 100.0),
        ("iter2_layer1", "iteration2", 50.0),
    ):
        fingerprint = pretrain[iteration]["kmeans_fingerprint"]
        for split in ("train", "valid"):
            meta = json.loads((data / f"{split}.{tag}.km.json").read_text())
            assert meta["kmeans_fingerprint"] == fingerprint and meta["label_rate"] == rate
            labels = read_label_file(data / f"{split}.{tag}.km")
            rows = list(read_jsonl(data / f"{split}.jsonl"))
            assert len(labels) == len(rows)
            for row, sequence in zip(rows, labels):
                assert abs(sequence.size - row["duration"] * rate) <= row["duration"] + 2
                assert sequence.max() < 8
    kmeans_files = sorted((run_dir / "labels").glob("iter1_mfcc_*.pt"))
    assert (
        KMeans.load(kmeans_files[0], device="cpu").fingerprint
        == pretrain["iteration1"]["kmeans_fingerprint"]
    )
    assert pretrain["iteration2"]["dropped_mismatched"] == 0
    assert pretrain["iteration1"]["train_utterances"] == 24
    # the verification speakers never enter pre-training
    speakers = {row.get("speaker") for row in read_jsonl(data / "train.jsonl")}
    assert speakers and not speakers & _speaker_set(speaker_root)[2]


@pytest.mark.slow  # a whole-recipe run
def test_arms_switch_the_speaker_aware_parts_and_checkpoints_reload(tiny_run):
    run_dir, _ = tiny_run
    pretrain = json.loads((run_dir / "results.json").read_text())["pretrain"]
    assert (pretrain["hubert"]["mixing"], pretrain["hubert"]["contrastive"]) == (False, False)
    assert (pretrain["unispeech_sat"]["mixing"], pretrain["unispeech_sat"]["contrastive"]) == (
        True,
        True,
    )
    encoder = speechssl.load_encoder(pretrain["unispeech_sat"]["checkpoint"])
    assert encoder.family == "wav2vec2" and encoder.num_layers == 2


def test_configs_compose():
    default = compose("hubert_sat")
    assert default.arms is None and default.objective.contrastive.enabled
    ablation = compose("hubert_sat", ["ablation=sat"])
    assert list(ablation.arms) == ["hubert", "unispeech_sat", "sat_no_contrastive", "sat_no_mixing"]
    assert dict(ablation.arms.sat_no_mixing) == {"mixing": False, "contrastive": True}
    base = compose(
        "hubert_sat",
        [
            "encoder=hubert_base",
            "objective.contrastive.layer=6",
            "trainer=gpu",
            "data=default",
            "transfer=default",
        ],
    )
    assert base.encoder.num_layers == 12
    assert compose("hubert_sat", ["head=ecapa"]).head.embedding_dim == 192  # paper's speaker head


@pytest.mark.slow  # a whole-recipe run
def test_ecapa_head_identifies_speakers_and_emotion_keeps_the_classifier(ecapa_run, speaker_root):
    results = json.loads((ecapa_run / "results.json").read_text())
    assert results["heads"]["pretrained_frozen"] == {"speaker_id": "ecapa", "emotion": "classifier"}
    sid = results["details"]["pretrained_frozen/speaker_id"]["runs"]
    assert [run["seed"] for run in sid] == [0]  # seeds=[0] in this run
    # the ECAPA head mixes the 3 hidden states of the 2-layer encoder with learned weights
    weights = sid[0]["layer_weights"]
    assert len(weights) == 3 and abs(sum(weights) - 1.0) < 1e-6
    transfer = ecapa_run / "transfer"
    speaker_model = torch.load(
        transfer / "speaker_id" / "pretrained_frozen" / "seed0" / "checkpoints" / "best.pt",
        weights_only=True,
    )["model"]
    readers = len(list((speaker_root / "wav").iterdir()))
    # AAM cosine classifier: one row per reader
    assert speaker_model["head.classifier.weight"].shape == (readers, 32)
    assert any(name.startswith("head.ecapa.") for name in speaker_model)
    emotion_model = torch.load(
        transfer / "emotion" / "pretrained_frozen" / "seed0" / "fold_1" / "checkpoints" / "best.pt",
        weights_only=True,
    )["model"]
    assert not any(name.startswith("head.ecapa.") for name in emotion_model)
    eer = [row for row in results["table"] if row["task"] == "speaker_verification"]
    assert math.isfinite(eer[0]["mean"])
    assert (ecapa_run / "layer_weights_speaker_id_pretrained_frozen.png").is_file()


@pytest.mark.slow  # a whole-recipe run
def test_wavlm_pretrains_with_the_unispeech_sat_objective(ecapa_run):
    arm = json.loads((ecapa_run / "results.json").read_text())["pretrain"]["pretrained"]
    assert arm["mixing"] and arm["contrastive"] and math.isfinite(arm["valid/loss"])
    encoder = speechssl.load_encoder(arm["checkpoint"])
    assert encoder.family == "wavlm" and encoder.config.num_buckets == 32
