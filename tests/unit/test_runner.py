"""xray_tasks.runner: stages as child processes, environment from connection fields, secrets masked."""

from __future__ import annotations

import json
import os
import sys

import pytest

from xray_tasks import runner, storage
from xray_tasks.runner import StageFailed, child_environment, connection_env, parse_summary, run_stage


def test_connection_env_maps_fields_and_derives_tfio_endpoint():
    env = connection_env("AKID", "s3cr3t-key", {"endpoint_url": "127.0.0.1:9000", "region_name": "eu-west-1"})
    assert env["AWS_ACCESS_KEY_ID"] == "AKID"
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-key"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    # tensorflow-io tries TLS without a scheme, so a bare host:port must gain http://.
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert env["S3_ENDPOINT"] == "http://127.0.0.1:9000"
    assert env["S3_VERIFY_SSL"] == "0"


def test_connection_env_reads_provider_service_config_and_json_text():
    extra = json.dumps(
        {"service_config": {"s3": {"endpoint_url": "https://minio.local:9000"}}, "verify": False}
    )
    env = connection_env(None, None, extra)
    assert env["AWS_ENDPOINT_URL"] == "https://minio.local:9000"
    assert env["S3_VERIFY_SSL"] == "0"
    assert "AWS_ACCESS_KEY_ID" not in env


@pytest.mark.parametrize("extra", ["{not json", "[1, 2]"])
def test_connection_env_rejects_bad_extra(extra):
    with pytest.raises((ValueError, TypeError), match="extra"):
        connection_env("a", "b", extra)


def test_child_environment_never_mixes_worker_and_connection_credentials():
    base = {
        "PATH": "/bin",
        "AWS_ACCESS_KEY_ID": "worker",
        "AWS_SESSION_TOKEN": "worker-token",
        "S3_ENDPOINT": "http://elsewhere:1",
    }
    env = child_environment(connection_env("conn", "conn-secret", {"endpoint_url": "http://h:2"}), base)
    assert env["AWS_ACCESS_KEY_ID"] == "conn"
    assert "AWS_SESSION_TOKEN" not in env
    assert env["S3_ENDPOINT"] == "http://h:2"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"] == "/bin"
    # Without connection credentials the worker's own environment is kept.
    assert child_environment({}, base)["AWS_ACCESS_KEY_ID"] == "worker"


@pytest.mark.parametrize(
    "stdout, message", [("", "nothing"), ("a\nnot json\n", "not JSON"), ("[1]\n", "not an object")]
)
def test_parse_summary_rejects_missing_or_bad_last_line(stdout, message):
    with pytest.raises(ValueError, match=message):
        parse_summary(stdout)


def test_parse_summary_reads_last_line_after_other_output():
    assert parse_summary('split counts\n  train 3\n{"images": 3}\n\n') == {"images": 3}


def test_run_stage_returns_summary_and_streams_log(synth_tree):
    source = synth_tree(patients=8, archives=2, image_size=64)
    lines: list[str] = []
    summary = run_stage("list-archives", [str(source)], log=lines.append)
    assert [storage.basename(a) for a in summary["archives"]] == ["images_001.tar.gz", "images_002.tar.gz"]
    assert summary["_elapsed_s"] > 0
    assert lines[0] == f"running: xray-tasks list-archives {source}"
    assert any("list-archives finished" in line for line in lines)


def test_run_stage_reports_the_stage_process_cpu_time_and_peak_memory(tmp_path):
    """``_cpu_s`` and ``_peak_rss_mb`` are the stage process's own (``wait4``): a child that holds 300 MB and spins
    for half a second of CPU must show both, and the parent's own memory must not count."""
    program = tmp_path / "stage.py"
    program.write_text(
        "import time\n"
        "block = bytearray(300 * 2**20)\n"
        "block[::4096] = b'x' * len(block[::4096])  # touch every page: resident, not only reserved\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.5:\n"
        "    pass\n"
        "print('{\"ok\": 1}')\n"
    )
    interpreter = tmp_path / "python"  # stands in for the interpreter: runs the program whatever the argv
    interpreter.write_text(f"#!/bin/sh\nexec {sys.executable} {program}\n")
    interpreter.chmod(0o755)
    lines: list[str] = []
    parent = bytearray(
        700 * 2**20
    )  # a big parent (as a TensorFlow test process is): the stage must not count it
    parent[::4096] = b"p" * len(parent[::4096])
    summary = run_stage("anything", python=str(interpreter), log=lines.append)
    del parent
    assert summary["ok"] == 1
    assert summary["_peak_rss_mb"] >= 300, summary
    assert summary["_peak_rss_mb"] < 300 + 200, summary  # the stage's, not the test process's (TF and all)
    assert summary["_cpu_s"] >= 0.45, summary
    assert summary["_cpu_s"] <= summary["_elapsed_s"] + 0.5
    assert any("peak RSS" in line for line in lines if "anything finished" in line)


def test_failing_stage_raises_with_the_stage_error(tmp_path):
    lines: list[str] = []
    with pytest.raises(StageFailed) as info:
        run_stage("validate", ["--workspace", str(tmp_path / "empty")], log=lines.append)
    assert info.value.returncode == 1
    assert "manifest.parquet" in str(info.value)
    # The stage's own log reached the caller's log, not only the exception.
    assert any("validate failed" in line and "manifest.parquet" in line for line in lines)


def test_secrets_are_masked_in_log_and_error(tmp_path):
    secret = "Zm9vYmFyLXNlY3JldA"
    env = child_environment(connection_env("AKIDEXAMPLE", secret, {}))
    lines: list[str] = []
    with pytest.raises(StageFailed) as info:
        # The secret appears in the argument, hence in the command line and the stage's error message.
        run_stage("validate", ["--workspace", str(tmp_path / secret)], env=env, log=lines.append)
    assert secret not in str(info.value) and runner.MASK in str(info.value)
    assert lines and not any(secret in line for line in lines)


def test_timeout_kills_the_stage(tmp_path):
    with pytest.raises(StageFailed, match="killed after") as info:
        run_stage("synth", [str(tmp_path / "big"), "--patients", "5000", "--image-size", "512"], timeout=2)
    assert info.value.returncode is None


def test_run_stage_validates_arguments():
    with pytest.raises(ValueError, match="timeout"):
        run_stage("validate", timeout=0)
    with pytest.raises(ValueError, match="subcommand"):
        run_stage("--help")


@pytest.mark.s3
def test_stage_reads_s3_with_credentials_from_connection_fields(s3_server, s3_bucket, synth_tree):
    source = synth_tree(patients=6, archives=1, image_size=64)
    storage.put_file(source / "images_001.tar.gz", f"{s3_bucket}/src/images_001.tar.gz")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    fields = connection_env(
        "testing", "testing", {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1"}
    )
    summary = run_stage("list-archives", [f"{s3_bucket}/src"], env=child_environment(fields, base))
    assert summary["archives"] == [f"{s3_bucket}/src/images_001.tar.gz"]


def _fake_python(tmp_path, script: str):
    """An interpreter stand-in that ignores ``-m xray_tasks.cli ...`` and runs ``script`` (sh) instead."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_stdout_lines_are_forwarded_masked_and_the_summary_is_not(tmp_path):
    secret = "Zm9vYmFyLXNlY3JldA"
    python = _fake_python(tmp_path, f'echo "progress {secret}"; echo "warn" >&2; echo \'{{"ok": true}}\'')
    lines: list[str] = []
    summary = run_stage(
        "anything",
        env={"AWS_SECRET_ACCESS_KEY": secret, "PATH": os.environ["PATH"]},
        python=python,
        log=lines.append,
    )
    assert summary["ok"] is True
    assert f"progress {runner.MASK}" in lines and "warn" in lines
    assert not any(secret in line or '"ok"' in line for line in lines)


def test_a_stage_that_exits_0_without_a_summary_fails(tmp_path):
    with pytest.raises(StageFailed, match="nothing on stdout") as info:
        run_stage("anything", python=_fake_python(tmp_path, "echo 'error: not this one' >&2"))
    assert info.value.returncode == 0


def test_a_signing_key_in_the_stage_environment_is_a_secret_line_by_line():
    pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPrivateBodyLine1\n-----END PRIVATE KEY-----\n"
    secrets = runner.secret_values({"XRAY_SIGNING_KEY": pem, "HOME": "/root"})
    assert pem in secrets and "MC4CAQAwBQYDK2VwBCIEIPrivateBodyLine1" in secrets
    logged = runner.mask("key line MC4CAQAwBQYDK2VwBCIEIPrivateBodyLine1 seen", secrets)
    assert "PrivateBodyLine1" not in logged and "/root" not in secrets
