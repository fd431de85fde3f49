"""Processes started in a session of their own and stopped by the exact PIDs recorded (tests/support/cluster.py).

A PID is remembered with its start time, so a recycled PID is never signalled; a stop reaches the process group and
every descendant that left it (Airflow's task process starts a session of its own).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import REPO

logger = logging.getLogger(__name__)


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, start time in clock ticks) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may contain spaces
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def process_tree(root: int) -> dict[int, int]:
    """``{pid: start_time}`` of ``root``'s process group and of every descendant of ``root`` (any group)."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = proc_stat(int(entry.name))
            if info:
                table[int(entry.name)] = info
    tree = {pid: info[2] for pid, info in table.items() if info[1] == root or pid == root}
    # Descendants of every member: a child that started a session of its own (Airflow's task process does) has
    # left the group, but not the family.
    frontier = list(tree)
    while frontier:
        parent = frontier.pop()
        for pid, info in table.items():
            if info[0] == parent and pid not in tree:
                tree[pid] = info[2]
                frontier.append(pid)
    return tree


def command_line(pid: int) -> str:
    """The first 160 characters of a process's command line ("" once it is gone)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")[:160]
            .strip()
        )
    except OSError:
        return ""


def still_alive(pids: dict[int, int]) -> list[int]:
    """The recorded PIDs that are still the same live process (same start time, not a zombie)."""
    return [pid for pid, started in pids.items() if (info := proc_stat(pid)) and info[2] == started]


def signal_exact(pids: dict[int, int], sig: int) -> None:
    """Send ``sig`` to each recorded PID that is still the same process (same start time)."""
    for pid, started in pids.items():
        info = proc_stat(pid)
        if info and info[2] == started:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


@dataclass
class Service:
    """One long-running process of the cluster and its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    seen: dict[int, int] = field(default_factory=dict)
    log_offset: int = 0
    """Size of the log when this run of the service started: what it printed since begins there."""

    def start(self) -> None:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            # A session of its own: its process group holds the component and what it forks.
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(REPO),
            )
        self.seen = {}
        logger.info("started %s (pid %d)", self.name, self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_tree(self) -> None:
        """Record the current group and descendants, so a stop also reaches children that have left the group."""
        if self.alive:
            self.seen.update(process_tree(self.proc.pid))

    def stop(self, grace: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """``sig`` to the process group (and recorded descendants); SIGKILL whatever still runs after ``grace``."""
        if self.proc is None:
            return
        self.remember_tree()
        pids = dict(self.seen)
        if self.proc.poll() is None:
            signal_exact(pids, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not still_alive(pids):
                break
            time.sleep(0.2)
        signal_exact(pids, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) did not exit after SIGKILL", self.name, self.proc.pid)
        # SIGKILL is asynchronous: give the kernel a moment to tear the processes down before anyone checks.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and still_alive(pids):
            time.sleep(0.1)
        if still_alive(pids):
            logger.warning("%s: still alive after SIGKILL: %s", self.name, sorted(still_alive(pids)))
        logger.info("stopped %s (pid %d, exit %s)", self.name, self.proc.pid, self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL at once: a worker lost mid-task, as when its host dies."""
        self.stop(grace=0.0, sig=signal.SIGKILL)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text[-chars:]
