"""How long the shared secrets must be: the API token (``--token``) and coturn's secret (``--turn-secret``).
Shorter ones stop the server at start; the options' help and the docs quote these numbers."""

from __future__ import annotations

MIN_TOKEN_CHARS = 8
MIN_TURN_SECRET_CHARS = 16
SECRET_RECIPE = "openssl rand -hex 32"  # what the docs and the errors suggest


def require_length(option: str, value: str | None, minimum: int) -> None:
    """Raises ValueError naming ``option`` when ``value`` is set and shorter than ``minimum``."""
    if value is not None and len(value) < minimum:
        raise ValueError(f"{option} must be at least {minimum} characters, got {len(value)} "
                         f"(e.g. `{SECRET_RECIPE}`)")
