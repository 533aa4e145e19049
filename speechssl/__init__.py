"""speechssl: self-supervised speech pre-training and transfer.

Three lines take an encoder into another project::

    import speechssl
    encoder = speechssl.load_encoder("runs/tpc/pretrain/checkpoints/step_00000600.pt")
    out = encoder(wav, lengths)  # EncoderOutput(last_hidden_state, hidden_states, lengths)

``import speechssl`` itself imports nothing heavy: ``load_encoder`` and ``encoders`` (and
torch with them) load on first use, so that the ``speechssl`` console script
(:mod:`speechssl.entry`) can catch Ctrl-C before torch starts importing.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "encoders", "load_encoder"]


def __getattr__(name: str):
    # PEP 562: the public names load on first use (each import is a module of the house)
    if name == "load_encoder":
        return importlib.import_module("speechssl.loading").load_encoder
    if name == "encoders":
        return importlib.import_module("speechssl.encoders")
    raise AttributeError(f"module 'speechssl' has no attribute {name!r}")
