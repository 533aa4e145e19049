"""torch.hub entry points: load a speechssl encoder from a local clone, nothing downloaded.

>>> import torch
>>> encoder = torch.hub.load("/path/to/speechssl", "encoder", path="export_dir", source="local")
>>> fresh = torch.hub.load("/path/to/speechssl", "hubert_base", source="local")
"""

dependencies = ["torch"]


def encoder(path, map_location="cpu"):
    """An eval-mode encoder from any format ``speechssl.load_encoder`` opens (a training
    checkpoint, an export, a torchaudio / fairseq / unilm file, a Hugging Face folder)."""
    from speechssl.loading import load_encoder

    return load_encoder(path, map_location=map_location)


def _preset(name):
    def build(**overrides):
        from speechssl.encoders import build_encoder

        return build_encoder(name, **overrides)

    build.__name__ = name
    build.__doc__ = (
        f"A randomly initialised ``{name}`` encoder (keyword overrides change its config)."
    )
    return build


hubert_tiny = _preset("hubert_tiny")
hubert_base = _preset("hubert_base")
hubert_large = _preset("hubert_large")
wav2vec2_base = _preset("wav2vec2_base")
wavlm_tiny = _preset("wavlm_tiny")
wavlm_base = _preset("wavlm_base")
wavlm_base_plus = _preset("wavlm_base_plus")
wavlm_large = _preset("wavlm_large")
fbank_transformer_tiny = _preset("fbank_transformer_tiny")
fbank_transformer_base = _preset("fbank_transformer_base")
conformer_tiny = _preset("conformer_tiny")
conformer_base = _preset("conformer_base")
tpc_tiny = _preset("tpc_tiny")
tpc_base = _preset("tpc_base")
apc = _preset("apc")
