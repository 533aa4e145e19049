"""Weight-exact conversion between the wav2vec 2.0 / HuBERT encoder and its peers.

- :mod:`.torchaudio_format`: ``Wav2Vec2Model`` objects and saved state dicts;
- :mod:`.fairseq_format`: fairseq ``.pt`` files (no fairseq install needed);
- :mod:`.huggingface_format`: local ``transformers`` folders (HuBERT, wav2vec 2.0,
  UniSpeech-SAT), both ways.

Three lines take a public HuBERT into a project (or use ``speechssl.load_encoder``, which
recognises every one of these formats)::

    from speechssl.encoders.wav2vec2.convert import load_fairseq_checkpoint
    encoder = load_fairseq_checkpoint("hubert_base_ls960.pt")   # a local file
    out = encoder(wav, lengths)                                 # EncoderOutput
"""

from .fairseq_format import (
    FAIRSEQ_KEY_MAP,
    config_from_fairseq,
    encoder_from_fairseq,
    fairseq_to_speechssl_key,
    load_fairseq_checkpoint,
)
from .huggingface_format import from_huggingface, load_local_transformers_model, to_huggingface
from .torchaudio_format import (
    TORCHAUDIO_KEY_MAP,
    TORCHAUDIO_PRESETS,
    config_from_torchaudio,
    encoder_from_torchaudio_state,
    from_torchaudio,
    load_torchaudio_checkpoint,
    match_torchaudio_preset,
    speechssl_to_torchaudio_key,
    to_torchaudio,
    torchaudio_to_speechssl_key,
)

__all__ = [
    "FAIRSEQ_KEY_MAP",
    "TORCHAUDIO_KEY_MAP",
    "TORCHAUDIO_PRESETS",
    "config_from_fairseq",
    "config_from_torchaudio",
    "encoder_from_fairseq",
    "encoder_from_torchaudio_state",
    "fairseq_to_speechssl_key",
    "from_huggingface",
    "from_torchaudio",
    "load_fairseq_checkpoint",
    "load_local_transformers_model",
    "load_torchaudio_checkpoint",
    "match_torchaudio_preset",
    "speechssl_to_torchaudio_key",
    "to_huggingface",
    "to_torchaudio",
    "torchaudio_to_speechssl_key",
]
