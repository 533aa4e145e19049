"""Write ``speechssl/conf/encoder/<preset>.yaml`` for every Python encoder preset.

The presets in ``speechssl.encoders.PRESETS`` (each family's ``config.py``) are the one
place of an encoder's values; Hydra's ``encoder=<preset>`` reads these generated files, and
``tests/unit/encoders/test_encoder_invariants.py`` fails when a file differs from its preset.
Files of presets that no longer exist are removed.

Example:
    PYTHONPATH=$PWD python tools/write_encoder_configs.py
"""

from __future__ import annotations

from speechssl.config import CONF_DIR, encoder_preset_yaml
from speechssl.encoders import PRESETS


def main() -> None:
    folder = CONF_DIR / "encoder"
    for path in sorted(folder.glob("*.yaml")):
        if path.stem not in PRESETS:
            path.unlink()
            print(f"removed {path}")
    for name in sorted(PRESETS):
        path = folder / f"{name}.yaml"
        text = encoder_preset_yaml(name)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
