"""The HTTP service (FastAPI): ``create_app`` builds it; ``fundalloc serve`` runs it."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
