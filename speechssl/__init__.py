"""speechssl: self-supervised speech pre-training and transfer.

Three lines take an encoder into another project::

    import speechssl
    encoder = speechssl.load_encoder("runs/tpc/pretrain/checkpoints/step_00000600.pt")
    out = encoder(wav, lengths)  # EncoderOutput(last_hidden_state, hidden_states, lengths)
"""

from speechssl import encoders
from speechssl.loading import load_encoder

__version__ = "0.1.0"

__all__ = ["__version__", "encoders", "load_encoder"]
