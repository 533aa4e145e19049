"""Corpus preparation, manifests, datasets, samplers and collation."""
