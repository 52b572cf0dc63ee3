"""The cluster's secrets, kept out of Ray's actor specs (which Ray stores in its GCS and shows to anyone who can
list actors): Ray's own token authentication, the front-to-worker token derived from it, and the TURN secret the
workers read from their environment (docs/scale.md#what-ray-exposes).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path

from rtc.ice_config import IceConfig

RAY_AUTH_MODE = "RAY_AUTH_MODE"  # Ray's switch: "token" makes every Ray RPC and HTTP entry point need the token
RAY_AUTH_TOKEN = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"
RAY_DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"  # where `ray get-auth-token --generate` writes it
TURN_SECRET_ENV = "SANA_STREAM_TURN_SECRET"
TURN_CREDENTIAL_ENV = "SANA_STREAM_TURN_CREDENTIAL"


def require_ray_auth(joining: bool) -> None:
    """Turns Ray's token authentication on for this process and the Ray processes it starts: a local cluster gets
    a token of its own for this run (unless RAY_AUTH_TOKEN is set); a joined cluster's token must be at hand.
    Raises ValueError for RAY_AUTH_MODE set to anything else, or a joined cluster without a token."""
    mode = os.environ.get(RAY_AUTH_MODE)
    if mode is not None and mode.lower() != "token":
        raise ValueError(f"{RAY_AUTH_MODE}={mode}: sana-stream runs Ray with token authentication only (without it "
                         "anyone who reaches Ray's ports runs code on the cluster); unset it or set it to token")
    os.environ[RAY_AUTH_MODE] = "token"
    if not joining and not os.environ.get(RAY_AUTH_TOKEN):
        os.environ[RAY_AUTH_TOKEN] = secrets.token_hex(32)
    ray_token()
    if "ray" in sys.modules:  # Ray read RAY_AUTH_MODE when imported: re-read it, as Ray's own token setup does
        from ray._raylet import Config

        Config.initialize("")


def ray_token() -> str:
    """Ray's token, where Ray itself looks for it: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or
    ~/.ray/auth_token; ValueError naming them when none has one."""
    if os.environ.get(RAY_AUTH_TOKEN):
        return os.environ[RAY_AUTH_TOKEN].strip()
    path = Path(os.environ[RAY_AUTH_TOKEN_PATH]) if os.environ.get(RAY_AUTH_TOKEN_PATH) else RAY_DEFAULT_TOKEN_FILE
    token = path.read_text().strip() if path.is_file() else ""
    if not token:
        raise ValueError(f"Ray's token authentication needs the cluster's token: set {RAY_AUTH_TOKEN} (or "
                         f"{RAY_AUTH_TOKEN_PATH}, or run `ray get-auth-token`) as on the cluster's nodes "
                         "(docs/scale.md)")
    return token


def internal_token(run: str) -> str:
    """The token the workers accept from the front for run ``run``: derived from Ray's token, which both hold, so
    it never travels (whoever has Ray's token can run code on the cluster anyway)."""
    return hmac.new(ray_token().encode(), f"sana-stream front {run}".encode(), hashlib.sha256).hexdigest()


def export_turn_secrets(ice: IceConfig) -> None:
    """Puts the TURN secret or credential in this process's environment, so a local Ray's workers inherit it (a
    value given on the command line is not there yet)."""
    for name, value in ((TURN_SECRET_ENV, ice.turn_secret), (TURN_CREDENTIAL_ENV, ice.turn_credential)):
        if value is not None:
            os.environ[name] = value


def worker_ice(urls: tuple[str, ...], turn_username: str | None, turn_ttl: float) -> IceConfig:
    """A worker's ICE servers: the front's URLs and its TURN secret or credential from this node's environment."""
    return IceConfig.from_options(urls, turn_username, os.environ.get(TURN_CREDENTIAL_ENV),
                                  os.environ.get(TURN_SECRET_ENV), turn_ttl)
