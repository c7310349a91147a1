"""Import litellm the offline-safe way (no remote cost map; bundled tiktoken encodings)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

_module: ModuleType | None = None


def prepare_offline_environment() -> None:
    """Set the env vars litellm and tiktoken read at import time, unless the user set them."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = importlib.util.find_spec("litellm")
        if spec is not None and spec.origin is not None:
            bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
            if bundled.is_dir():
                os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)


def get_litellm() -> ModuleType:
    """Return the litellm module, imported once after ``prepare_offline_environment``."""
    global _module
    if _module is None:
        prepare_offline_environment()
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        _module = litellm
    return _module
