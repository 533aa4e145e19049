"""Corpus preparation, manifests, datasets, samplers and collation."""

from speechssl.data.collate import Batch, collate
from speechssl.data.compact import Manifest
from speechssl.data.dataset import AudioDataset
from speechssl.data.loaders import DataConfig, make_loader
from speechssl.data.sampler import DurationBucketSampler

CONFIG_SCHEMAS = {"data": {"data": DataConfig}}

__all__ = [
    "CONFIG_SCHEMAS",
    "AudioDataset",
    "Batch",
    "DataConfig",
    "DurationBucketSampler",
    "Manifest",
    "collate",
    "make_loader",
]
