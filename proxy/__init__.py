"""memproxy's HTTP side: an OpenAI-compatible chat proxy with per-user long-term memory."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
