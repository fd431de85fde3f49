#!/usr/bin/env bash
# Entry point of the xray-airflow image: `docker run IMAGE scheduler` runs `airflow scheduler`; a command that
# is a program (bash, python, celery, xray-tasks, an absolute path) runs as it is.  exec: the process gets the
# container's signals directly (compose runs an init as PID 1 that forwards them), so Celery shuts down warm.
set -euo pipefail

case "${1:-}" in
  bash|sh|python|python3|celery|xray-tasks|airflow|/*)
    exec "$@" ;;
esac
exec airflow "$@"
