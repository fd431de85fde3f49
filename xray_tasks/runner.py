"""Run one pipeline stage as a child process of the ``xray-tasks`` CLI and read back its JSON summary.

This is how an orchestrator (the Airflow DAGs, a shell, a notebook) runs heavy stages: TensorFlow state, GPU
memory and tensorflow-io's abort at interpreter exit stay in the child, the caller only sees the child's log lines
and the one-line JSON summary it prints last.  Nothing here imports Airflow: object-storage credentials arrive as
plain connection fields (``login``, ``password``, ``extra``) and are handed to the child through its environment.
Secret values are never logged: they are masked in every line this module forwards.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xray_tasks.storage.endpoints import normalize_endpoint, tfio_environment

logger = logging.getLogger(__name__)

MASK = "***"
TAIL_LINES = 20
"""stderr lines kept to quote in the error when a stage fails."""
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "S3_ENDPOINT",
    "S3_VERIFY_SSL",
)


AIRFLOW_KEPT_PREFIXES = ("AIRFLOW__XRAY__",)
"""Airflow settings a stage may see: the pipeline's own section.  Every other ``AIRFLOW__*`` variable (the metadata
database URL, the Fernet key, the JWT and API secrets, the broker and result backend, ``..._CMD`` / ``..._SECRET``
variants) and every ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` stays with the worker: a stage reads only its arguments
and the storage environment."""


def is_airflow_secret(name: str) -> bool:
    """True for the variables of a worker's environment that a stage process must not inherit."""
    if name.startswith("AIRFLOW__"):
        return not name.startswith(AIRFLOW_KEPT_PREFIXES)
    return name.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))


class StageFailed(RuntimeError):
    """A stage exited with a non-zero status (or timed out); the message carries the stage's own error."""

    def __init__(self, stage: str, returncode: int | None, reason: str) -> None:
        self.stage = stage
        self.returncode = returncode
        self.reason = reason
        status = "timed out" if returncode is None else f"exit status {returncode}"
        super().__init__(f"stage {stage!r} failed ({status}): {reason}")


def connection_env(
    login: str | None = None, password: str | None = None, extra: Mapping[str, Any] | str | None = None
) -> dict[str, str]:
    """Environment variables for an S3 API from the fields of an object-storage connection.

    Args:
        login: the access key id.
        password: the secret access key.
        extra: a mapping (or its JSON text) with optional ``endpoint_url`` (MinIO, moto, any S3 API; also read
            from ``service_config.s3.endpoint_url`` as the Amazon provider writes it), ``region_name``,
            ``aws_session_token`` and ``verify``.

    Returns:
        ``AWS_*`` variables for boto3/pyarrow plus tensorflow-io's ``S3_ENDPOINT``/``S3_VERIFY_SSL``; only the
        fields that were given.

    Raises:
        ValueError: ``extra`` is text that is not valid JSON.
        TypeError: ``extra`` is neither a mapping nor JSON text of an object.
    """
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"connection extra is not valid JSON ({exc.msg}); expected a JSON object"
            ) from None
    extra = {} if extra is None else extra
    if not isinstance(extra, Mapping):
        raise TypeError(f"connection extra must be a JSON object, got {type(extra).__name__}")
    env: dict[str, str] = {}
    if login:
        env["AWS_ACCESS_KEY_ID"] = login
    if password:
        env["AWS_SECRET_ACCESS_KEY"] = password
    if extra.get("aws_session_token"):
        env["AWS_SESSION_TOKEN"] = str(extra["aws_session_token"])
    region = extra.get("region_name") or extra.get("region")
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = str(region)
    endpoint = extra.get("endpoint_url") or (extra.get("service_config") or {}).get("s3", {}).get(
        "endpoint_url"
    )
    if endpoint:
        env["AWS_ENDPOINT_URL"] = normalize_endpoint(endpoint)
    derived = tfio_environment(env)
    for key in ("S3_ENDPOINT", "S3_VERIFY_SSL"):
        if key in derived:
            env[key] = derived[key]
    if "verify" in extra and extra["verify"] is not None:
        env["S3_VERIFY_SSL"] = "1" if str(extra["verify"]).lower() not in ("0", "false", "no") else "0"
    return env


def child_environment(
    overrides: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a stage process: ``base`` (default: ours) with ``overrides`` applied.

    When the overrides carry credentials, every AWS/S3 variable of the base is dropped first, so a worker's own
    keys or endpoint can never mix with the connection's.  Airflow's own secrets in the base (database, Fernet,
    JWT, API, broker, connections and variables; :func:`is_airflow_secret`) are never passed on.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not is_airflow_secret(k)}
    overrides = dict(overrides or {})
    if "AWS_ACCESS_KEY_ID" in overrides or "AWS_ENDPOINT_URL" in overrides:
        for key in AWS_VARIABLES:
            env.pop(key, None)
    env.update(overrides)
    env = tfio_environment(env)
    # Progress lines must reach the log as they happen, not when a buffer fills.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values in ``env`` that must never appear in a log."""
    names = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "XRAY_SIGNING_KEY")
    values = {env[n] for n in names if env.get(n) and len(env[n]) >= 4}
    # A PEM private key spans lines and logs are masked line by line: each line of its body is a secret too.
    pem = env.get("XRAY_SIGNING_KEY") or ""
    values |= {line.strip() for line in pem.splitlines() if len(line.strip()) >= 8 and "-----" not in line}
    return sorted(values, key=len, reverse=True)


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def parse_summary(stdout: str) -> dict[str, Any]:
    """The JSON object on the last non-empty line of a stage's stdout.

    Raises:
        ValueError: there is no such line, or it is not a JSON object.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the stage printed nothing on stdout; expected a JSON summary as the last line")
    try:
        summary = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise ValueError(f"the last stdout line is not JSON: {lines[-1][:200]!r}") from None
    if not isinstance(summary, dict):
        # Malformed output of the stage, not a wrong argument type: a ValueError like the other cases.
        raise ValueError(f"the last stdout line is JSON but not an object: {lines[-1][:200]!r}")  # noqa: TRY004
    return summary


def stage_command(stage: str, args: Sequence[str] = (), python: str | None = None) -> list[str]:
    """The argv that runs ``xray-tasks STAGE ARGS...`` with the given interpreter (default: this one)."""
    if not stage or stage.startswith("-"):
        raise ValueError(f"stage must be an xray-tasks subcommand name, got {stage!r}")
    return [python or sys.executable, "-m", "xray_tasks.cli", stage, *[str(a) for a in args]]


def run_stage(
    stage: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    python: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``xray-tasks STAGE ARGS...`` as a child process and return its JSON summary.

    The child's stderr (its log: progress, throughput, warnings) is forwarded line by line to ``log`` (default:
    this module's logger at INFO) as it arrives; other stdout lines are forwarded too.  Secrets of ``env`` are
    masked in everything forwarded and in the error.

    Args:
        stage: the subcommand, e.g. ``"ingest-archive"``.
        args: its arguments.
        env: the child's complete environment (see :func:`child_environment`); default: ours.
        timeout: seconds before the child (and its process group) is killed; ``None`` waits forever.
        python: interpreter to run the CLI with (default: the current one).
        log: where forwarded lines go.

    Returns:
        The summary the stage printed as its last stdout line, plus ``"_elapsed_s"`` (wall), ``"_cpu_s"`` (the
        child's user + system time) and ``"_peak_rss_mb"`` (its peak resident memory).

    Raises:
        StageFailed: non-zero exit status, timeout, or no JSON summary; the message quotes the stage's error.
        ValueError: bad arguments.
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds or None, got {timeout!r}")
    argv = stage_command(stage, args, python)
    env = dict(os.environ if env is None else env)
    out = _Output(log or logger.info, secret_values(env))
    out.emit(f"running: xray-tasks {shlex.join(argv[3:])}")
    started = time.monotonic()
    proc = _start(argv, env)
    stderr = out.pump_stderr(proc, stage)
    usage: dict[str, float] = {}
    try:
        returncode, expired = _wait(proc, timeout, out, usage)
    finally:
        stderr.join(timeout=10)
    return _outcome(stage, returncode, expired, timeout, time.monotonic() - started, out, usage)


class _Output:
    """Where a stage's lines go: masked, forwarded to ``emit``, the stderr tail and stdout kept for the outcome."""

    def __init__(self, emit: Callable[[str], None], secrets: Sequence[str]) -> None:
        self._emit, self.secrets = emit, secrets
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stdout: list[str] = []

    def emit(self, line: str) -> None:
        self._emit(mask(line, self.secrets))

    def stderr_line(self, line: str) -> None:
        line = mask(line.rstrip("\n"), self.secrets)
        self.tail.append(line)
        self._emit(line)

    def stdout_line(self, line: str) -> None:
        line = line.rstrip("\n")
        self.stdout.append(line)
        if line.strip() and not line.lstrip().startswith("{"):  # the JSON summary is returned, not logged
            self.emit(line)

    def pump_stderr(self, proc: subprocess.Popen, stage: str) -> threading.Thread:
        """A started thread forwarding ``proc``'s stderr as it arrives (stdout is read by the waiting thread)."""

        def pump() -> None:
            for line in proc.stderr:
                self.stderr_line(line)

        reader = threading.Thread(target=pump, name=f"{stage}-stderr", daemon=True)
        reader.start()
        return reader


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    # The child stays in our process group: an orchestrator that signals the group of a killed task (Airflow's
    # supervisor does) reaches the stage as well.
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        errors="replace",
        bufsize=1,
    )


def _wait(
    proc: subprocess.Popen, timeout: float | None, out: _Output, usage: dict[str, float]
) -> tuple[int, bool]:
    """Read ``proc``'s stdout to its end and wait for it, killing it after ``timeout`` seconds.  ``usage`` gets the
    child's CPU seconds (``wait4``) and peak RSS (its ``VmHWM`` when its last stdout line arrives).

    Returns:
        The exit status and whether the timeout killed it.
    """
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _kill(proc)

    timer = threading.Timer(timeout, expire) if timeout else None
    try:
        if timer:
            timer.start()
        for line in proc.stdout:
            out.stdout_line(line)
            # The high-water mark as the summary (the last line, after all the work) arrives: wait4's ru_maxrss
            # would count the parent's memory, which a forked child carries until it executes the stage.
            usage["peak_rss_mb"] = _high_water_mb(proc.pid) or usage.get("peak_rss_mb", 0.0)
        returncode = _reap(proc, usage)
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:  # interrupted (task killed, execution timeout): never leave the stage running
            _kill(proc)
            proc.wait()
    return returncode, expired.is_set()


def _reap(proc: subprocess.Popen, usage: dict[str, float]) -> int:
    """``proc.wait()`` that also records the child's resource usage (``os.wait4``)."""
    try:
        _, status, rusage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # already reaped elsewhere: the status is Popen's, the usage unknown
        return proc.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)
    usage["cpu_s"] = round(rusage.ru_utime + rusage.ru_stime, 3)
    if not usage.get("peak_rss_mb"):  # no /proc reading: ru_maxrss, an upper bound (it includes the parent's)
        usage["peak_rss_mb"] = round(rusage.ru_maxrss / 1024, 1)  # Linux reports kilobytes
    return proc.returncode


def _high_water_mb(pid: int) -> float | None:
    """The process's peak resident memory since it executed its program (``VmHWM``), or ``None`` off Linux."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _outcome(
    stage: str,
    returncode: int,
    expired: bool,
    timeout: float | None,
    elapsed: float,
    out: _Output,
    usage: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The stage's summary (with ``_elapsed_s``), or the StageFailed that says why there is none."""
    if expired:
        out.emit(f"{stage} killed after {elapsed:.1f} s (timeout {timeout:g} s)")
        raise StageFailed(stage, None, f"killed after {timeout:g} s; last log: {_reason(out.tail)}")
    if returncode != 0:
        out.emit(f"{stage} failed after {elapsed:.1f} s with exit status {returncode}")
        raise StageFailed(stage, returncode, _reason(out.tail))
    try:
        summary = parse_summary("\n".join(out.stdout))
    except ValueError as exc:
        raise StageFailed(stage, returncode, mask(str(exc), out.secrets)) from None
    usage = usage or {}
    spent = f" (CPU {usage['cpu_s']:.1f} s, peak RSS {usage['peak_rss_mb']:.0f} MB)" if usage else ""
    out.emit(f"{stage} finished in {elapsed:.1f} s{spent}")
    summary["_elapsed_s"] = round(elapsed, 3)
    summary.update({f"_{k}": v for k, v in usage.items()})
    return summary


def _reason(tail: deque[str]) -> str:
    """The stage's own error line (``error: ...``, printed last by the CLI), else the last log lines."""
    for line in reversed(tail):
        if line.startswith("error: "):
            return line[len("error: ") :]
    lines = [line for line in tail if line.strip()]
    return " | ".join(lines[-3:]) if lines else "no output on stderr"


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.kill()
    except ProcessLookupError:
        pass
