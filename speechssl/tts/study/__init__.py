"""The TTS pre-training study of Zhang et al. (ICASSP 2022) as reusable steps.

Grid: pre-training fraction ``f`` in {0, 1/8, 1/4, 1/2, 1} (nested seeded subsets of the
multi-speaker pool, :func:`pretraining_subsets`) -> fine-tuning on the same target data with
the same budget -> synthesis of the target speaker's held-out sentences (binned by
character n-gram TF-IDF similarity to the target *training* text) and of out-of-domain
sentences -> objective metrics per sentence -> one table per fraction x bin.

Order of the data steps matters for leakage: :func:`split_target` holds the test sentences
out first and drops every training row whose normalised text equals a test sentence; only
then does :func:`build_test_set` fit the similarity vectorizer, on the remaining training
text alone.

Modules, one per job (this package re-exports their public names):
    sets       split_target, hold_out_dev, drop_texts, build_test_set, build_study_sets,
               check_test_set, select_pool, pretraining_subsets: target rows -> training rows, held-out
               TestSentence list and the similarity bins; pool rows -> {fraction: rows}
    training   training_steps, train_tts (a TacotronTTS on rows with the shared Trainer,
               early-stopping on a dev criterion, SELECT_ON: teacher-forced loss or
               FreeRunningDev's free-running MCD-DTW-SL / stop-length error),
               finetune_model (a fine-tuning model that starts from a pre-trained checkpoint)
    synthesis  evaluate_model: synthesize, vocode, write WAVs, per-sentence metrics
    summary    summarize, similarity_by_bin: means, CIs, paired deltas, bin contrasts
    report     results_markdown, write_study_plots: the table and the plots

Example:
    >>> rows = [{"id": f"LJ{i}", "audio": f"/{i}.wav", "text": f"Sentence number {i}."}
    ...         for i in range(10)]
    >>> train, test = split_target(rows, num_test=3, seed=0)
    >>> len(train), len(test)
    (7, 3)
    >>> sentences, bins = build_test_set(train, test, ["An unrelated remark."], num_bins=2)
    >>> [sentence.bin for sentence in sentences][-1], len(bins.thresholds)
    ('ood', 1)
"""

from speechssl.tts.similarity import TrainingTextSimilarity
from speechssl.tts.study.report import (
    results_markdown,
    write_dev_curves_plot,
    write_study_plots,
)
from speechssl.tts.study.sets import (
    TestSentence,
    build_study_sets,
    build_test_set,
    check_test_set,
    describe_sentences,
    drop_texts,
    hold_out_dev,
    pool_stats,
    pretraining_subsets,
    read_sentences,
    select_pool,
    split_target,
)
from speechssl.tts.study.summary import (
    TABLE_METRICS,
    sentence_estimate,
    similarity_by_bin,
    summarize,
)
from speechssl.tts.study.synthesis import (
    METRICS,
    Reference,
    evaluate_model,
    frames_per_character,
    load_references,
)
from speechssl.tts.study.training import (
    SELECT_ON,
    FreeRunningDev,
    budget_record,
    dev_curve,
    finetune_model,
    max_parameter_difference,
    record_stage,
    selection_metric,
    train_tts,
    training_seeds,
    training_steps,
)

__all__ = [
    "METRICS",
    "SELECT_ON",
    "TABLE_METRICS",
    "FreeRunningDev",
    "Reference",
    "TestSentence",
    "TrainingTextSimilarity",
    "budget_record",
    "build_study_sets",
    "build_test_set",
    "check_test_set",
    "describe_sentences",
    "dev_curve",
    "drop_texts",
    "evaluate_model",
    "finetune_model",
    "frames_per_character",
    "hold_out_dev",
    "load_references",
    "max_parameter_difference",
    "pool_stats",
    "pretraining_subsets",
    "read_sentences",
    "record_stage",
    "results_markdown",
    "select_pool",
    "selection_metric",
    "sentence_estimate",
    "similarity_by_bin",
    "split_target",
    "summarize",
    "train_tts",
    "training_seeds",
    "training_steps",
    "write_dev_curves_plot",
    "write_study_plots",
]
