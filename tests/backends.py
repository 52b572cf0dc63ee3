"""Moved to ``tests.support.backends``; kept only so test branches written before the move still import."""

from tests.support.backends import InstrumentedBackend  # noqa: F401
