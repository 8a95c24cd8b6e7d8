"""docker-compose.yml, as Compose resolves it (`config`, no engine needed): the deployable stack's rules.

Only the api publishes a port, on the host's loopback; every Ray node has token authentication on with the api's
token; the api and every Ray node share one artifact volume at the path TENSION_ARTIFACT_STORE names; the gpu
profile adds a GPU worker with an NVIDIA reservation built from the CUDA image; without a token nothing starts.
Skipped where neither `docker-compose` nor `docker compose` is installed (.ci/run installs docker-compose).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TOKEN = "test-placeholder-token"


def _compose() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


COMPOSE = _compose()
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`compose -f docker-compose.yml ARGS config` with only the given variables (no .env, no TENSION_* or
    COMPOSE_* of the caller's shell)."""
    assert COMPOSE is not None
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TENSION_", "COMPOSE_", "POSTGRES_"))}
    return subprocess.run([*COMPOSE, "-f", str(COMPOSE_FILE), "--env-file", str(empty_env), *args, "config"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**clean, **env})


def _config(tmp_path: Path, *profiles: str, **env: str) -> dict[str, Any]:
    """The resolved services active under these profiles (Compose v1 prints every service; v2 only active ones)."""
    args = [a for p in profiles for a in ("--profile", p)]
    r = _run(tmp_path, *args, TENSION_RAY_TOKEN=TOKEN, **env)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    cfg["services"] = {name: s for name, s in cfg["services"].items()
                       if not s.get("profiles") or set(s["profiles"]) & set(profiles)}
    return cfg


def _env(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target path -> named volume (bind mounts are named by their host path)."""
    out = {}
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source", ""), v["target"]
        out[target] = source
    return out


def _published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of every published port."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, str):
            parts = p.split("/")[0].split(":")
            out.append(("" if len(parts) < 3 else parts[0], parts[-2] if len(parts) > 1 else ""))
        else:
            out.append((p.get("host_ip", ""), str(p.get("published", ""))))
    return out


def _ray_services(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in cfg["services"].items() if name.startswith("ray-")}


@pytest.mark.parametrize("profiles", [(), ("gpu",)], ids=["default", "gpu"])
def test_the_stack_per_profile(tmp_path: Path, profiles: tuple[str, ...]) -> None:
    cfg = _config(tmp_path, *profiles)
    services = cfg["services"]
    expected = {"api", "postgres", "ray-head", "ray-worker"} | ({"ray-worker-gpu"} if profiles else set())
    assert set(services) == expected

    # Only the api's port is published, and on the host's loopback only.
    for name, s in services.items():
        if name == "api":
            assert _published(s) == [("127.0.0.1", "8000")]
        else:
            assert not s.get("ports"), f"{name} publishes {s['ports']}"

    # Ray's token authentication is on on every node, with the token the api sends.
    api = _env(services["api"])
    assert api["TENSION_EXECUTOR"] == "ray"
    assert api["TENSION_RAY_TOKEN"] == TOKEN
    assert re.fullmatch(r"http://ray-head:8265", api["TENSION_RAY_ADDRESS"])
    assert api["TENSION_SERVE_URL"].startswith("http://ray-head:")
    assert api["TENSION_RAY_SHIP_CODE"] == "true"
    rays = _ray_services(cfg)
    assert len(rays) == len(expected) - 2
    for name, s in rays.items():
        env = _env(s)
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"] == TOKEN, name
    head_cmd = " ".join(services["ray-head"]["command"])
    assert "--head" in head_cmd and "--dashboard-port=8265" in head_cmd
    for name in set(rays) - {"ray-head"}:
        assert "--address=ray-head:6379" in " ".join(services[name]["command"]), name

    # One artifact store: the same named volume at the same path in the api and every Ray node, and the store URL
    # the api hands the workers points there.
    store = api["TENSION_ARTIFACT_STORE"]
    assert store.startswith("file:///")
    path = store.removeprefix("file://")
    volume = _mounts(services["api"])[path]
    assert volume in cfg["volumes"]
    for name, s in rays.items():
        assert _mounts(s).get(path) == volume, name
        assert _env(s)["TENSION_ARTIFACT_STORE"] == store, name
    # The api's own files (DuckDB, the secret key) are not in the shared store.
    assert _mounts(services["api"])[_env(services["api"])["TENSION_DATA_DIR"]] != volume

    # depends_on is honest: what the api waits for has a healthcheck.
    for dep, cond in services["api"]["depends_on"].items():
        assert cond["condition"] == "service_healthy" and services[dep].get("healthcheck"), dep

    # A GPU reservation exactly where the gpu profile is on, on a worker built from the CUDA image.
    gpu_services = {name for name, s in services.items()
                    if any("gpu" in d.get("capabilities", []) for d in
                           (((s.get("deploy") or {}).get("resources") or {}).get("reservations") or {})
                           .get("devices", []))}
    if profiles:
        assert gpu_services == {"ray-worker-gpu"}
        args = services["ray-worker-gpu"]["build"]["args"]
        assert args["BASE_IMAGE"].startswith("nvidia/cuda:") and args["TORCH_FLAVOR"] == "cuda"
        assert services["ray-worker-gpu"]["image"] != services["ray-worker"]["image"]
    else:
        assert not gpu_services


def test_an_object_store_url_reaches_the_api_and_every_node(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "gpu", TENSION_ARTIFACT_STORE="s3://bucket/tension")
    for name in ["api", *_ray_services(cfg)]:
        assert _env(cfg["services"][name])["TENSION_ARTIFACT_STORE"] == "s3://bucket/tension", name


@pytest.mark.parametrize("profiles", [(), ("gpu",)], ids=["default", "gpu"])
def test_no_token_no_stack(tmp_path: Path, profiles: tuple[str, ...]) -> None:
    r = _run(tmp_path, *[a for p in profiles for a in ("--profile", p)])
    assert r.returncode != 0
    assert "set TENSION_RAY_TOKEN" in r.stdout + r.stderr


def test_the_dockerfile_takes_every_build_arg_compose_passes(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, flags=re.M))
    assert {"BASE_IMAGE", "TORCH_FLAVOR", "TORCH_INDEX", "TORCH_VERSION"} <= declared
    cfg = _config(tmp_path, "gpu")
    for name, s in cfg["services"].items():
        build = s.get("build")
        if isinstance(build, dict):
            assert set(build.get("args") or {}) <= declared, name
