"""The error every model-loading path raises: a reference that cannot be loaded."""

from __future__ import annotations


class ModelError(ValueError):
    """A model reference that cannot be loaded; the message says what to fix."""
