"""What Ray exposes and what protects it: token authentication always on (a local cluster's own token, a joined
cluster's from the environment), a client without the token refused by a real local Ray, and no secret in the
workers' actor specs (Ray stores them in its GCS). The KubeRay manifest's side is in tests/test_kuberay.py."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from types import SimpleNamespace

import pytest

from cluster import runtime
from cluster.config import ClusterConfig
from cluster.secrets import RAY_AUTH_MODE, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, internal_token, require_ray_auth
from cluster.serve import _specs
from cluster.worker import worker_settings
from rtc.ice_config import IceConfig
from server.settings import ServerSettings

TOKEN = "the-public-token-0123"
TURN_SECRET = "the-turn-secret-0123456789"
RAY_TOKEN = "r" * 64


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in (RAY_AUTH_MODE, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, "SANA_STREAM_TURN_SECRET",
                 "SANA_STREAM_TURN_CREDENTIAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token of this machine's user
    monkeypatch.setattr("cluster.secrets.RAY_DEFAULT_TOKEN_FILE", tmp_path / ".ray" / "auth_token")
    return monkeypatch


def test_ray_always_runs_with_token_authentication(clean_env):
    require_ray_auth(joining=False)  # a local cluster: a token of its own for this run
    assert os.environ[RAY_AUTH_MODE] == "token" and len(os.environ[RAY_AUTH_TOKEN]) == 64
    clean_env.delenv(RAY_AUTH_TOKEN)
    with pytest.raises(ValueError, match="needs the cluster's token: set RAY_AUTH_TOKEN"):
        require_ray_auth(joining=True)  # a joined cluster's token must come from its operator
    clean_env.setenv(RAY_AUTH_MODE, "disabled")
    with pytest.raises(ValueError, match="token authentication only"):
        require_ray_auth(joining=False)


def test_no_secret_travels_in_the_workers_actor_specs(clean_env):
    ice = IceConfig.from_options(["turn:turn.example.org"], turn_secret=TURN_SECRET)
    settings = ServerSettings(host="0.0.0.0", token=TOKEN, ice=ice)
    args = SimpleNamespace(precision=None, log_level="INFO")
    (spec,) = _specs(args, settings, "model", False, ClusterConfig(workers=1), run="run1")
    clean_env.setenv(RAY_AUTH_TOKEN, RAY_TOKEN)
    shipped = pickle.dumps(spec) + repr(spec).encode()
    for secret in (TOKEN, TURN_SECRET, RAY_TOKEN, internal_token("run1")):
        assert secret.encode() not in shipped
    with pytest.raises(ValueError, match="needs credentials"):
        worker_settings(spec)  # the worker's node has no TURN secret in its environment
    clean_env.setenv("SANA_STREAM_TURN_SECRET", TURN_SECRET)  # as the front exports it to a local Ray
    served = worker_settings(spec)
    assert served.token == internal_token("run1") and served.ice.turn_secret == TURN_SECRET
    assert served.view_token is None and served.pages is False


def test_a_local_ray_refuses_a_client_without_its_token(clean_env):
    ray = pytest.importorskip("ray")
    clean_env.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ice = IceConfig.from_options(["turn:turn.example.org"], turn_secret=TURN_SECRET)
    assert runtime.start_ray(ClusterConfig(workers=1), ice) is True
    try:
        address = ray.get_runtime_context().gcs_address
        token = os.environ[RAY_AUTH_TOKEN]
        assert os.environ["SANA_STREAM_TURN_SECRET"] == TURN_SECRET  # what the local workers inherit

        def join(env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
            """exit status (None: still retrying after ``timeout`` s), stdout, stderr of a driver joining it"""
            code = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(ray.cluster_resources())"
            base = {k: v for k, v in os.environ.items() if k not in (RAY_AUTH_TOKEN, RAY_AUTH_MODE)}
            try:
                done = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True,
                                      text=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:  # Ray's client retries a refused GCS for a long while
                return None, str(exc.stdout or ""), str(exc.stderr or "")
            return done.returncode, done.stdout, done.stderr

        wrong = join({RAY_AUTH_MODE: "token", RAY_AUTH_TOKEN: "not-the-token"}, timeout=20)
        right = join({RAY_AUTH_MODE: "token", RAY_AUTH_TOKEN: token}, timeout=120)
    finally:
        runtime.stop_ray(True)
    assert wrong[0] != 0 and "CPU" not in wrong[1], wrong[1]
    assert "InvalidAuthToken" in wrong[2], wrong[2][-2000:]  # the GCS said why
    assert right[0] == 0 and "CPU" in right[1], right[2][-2000:]
