#!/usr/bin/env bash
# Prepare an Airflow deployment for the xray DAGs; safe to run again (every step converges to the same state).
#
#   scripts/airflow-setup.sh            migrate the metadata DB, create/resize the `gpu` pool,
#                                       and create/replace the object-storage connection when credentials are given
#
# Environment (all optional):
#   AIRFLOW              the airflow command (default: airflow next to this venv's python, else on PATH)
#   XRAY_GPU_SLOTS       slots of the `gpu` pool: GPU tasks (feature extraction, fine-tuning) that may run at once (1)
#   XRAY_S3_CONN_ID      connection id the DAGs read (xray_s3; the DAGs use Variable xray_s3_conn_id if set)
#   XRAY_S3_ACCESS_KEY_ID, XRAY_S3_SECRET_ACCESS_KEY   object-storage keys; no keys -> no connection is written
#   XRAY_S3_ENDPOINT_URL  S3 API endpoint for MinIO or any S3-compatible store, e.g. http://minio:9000
#   XRAY_S3_REGION        region name (us-east-1)
#   XRAY_SKIP_MIGRATE=1   do not run `airflow db migrate` (e.g. when the deployment runs it itself)
# Secrets travel through a private temporary file, never through argv or this script's output.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
if [[ -z "${AIRFLOW:-}" ]]; then
  if [[ -x "$repo/.venv/bin/airflow" ]]; then AIRFLOW="$repo/.venv/bin/airflow"; else AIRFLOW=airflow; fi
fi
python="$(dirname "$(command -v "$AIRFLOW")")/python"
[[ -x "$python" ]] || python=python3

if [[ "${XRAY_SKIP_MIGRATE:-0}" != 1 ]]; then
  echo "airflow-setup: migrating the metadata database"
  "$AIRFLOW" db migrate >/dev/null
fi

slots="${XRAY_GPU_SLOTS:-1}"
[[ "$slots" =~ ^[0-9]+$ ]] || { echo "airflow-setup: XRAY_GPU_SLOTS must be a whole number, got '$slots'" >&2; exit 2; }
"$AIRFLOW" pools set gpu "$slots" "GPU tasks of the xray DAGs (feature extraction, fine-tuning)" >/dev/null
echo "airflow-setup: pool gpu has $slots slot(s)"

conn_id="${XRAY_S3_CONN_ID:-xray_s3}"
if [[ -n "${XRAY_S3_ACCESS_KEY_ID:-}" && -n "${XRAY_S3_SECRET_ACCESS_KEY:-}" ]]; then
  tmp="$(umask 077 && mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  CONN_ID="$conn_id" "$python" - "$tmp/connections.json" <<'PY'
import json, os, sys

extra = {"region_name": os.environ.get("XRAY_S3_REGION") or "us-east-1"}
if os.environ.get("XRAY_S3_ENDPOINT_URL"):
    extra["endpoint_url"] = os.environ["XRAY_S3_ENDPOINT_URL"]
conn = {"conn_type": "aws", "login": os.environ["XRAY_S3_ACCESS_KEY_ID"],
        "password": os.environ["XRAY_S3_SECRET_ACCESS_KEY"], "extra": json.dumps(extra)}
with open(sys.argv[1], "w") as fh:
    json.dump({os.environ["CONN_ID"]: conn}, fh)
PY
  "$AIRFLOW" connections import --overwrite "$tmp/connections.json" >/dev/null
  echo "airflow-setup: connection $conn_id (aws) written${XRAY_S3_ENDPOINT_URL:+ with endpoint $XRAY_S3_ENDPOINT_URL}"
else
  echo "airflow-setup: no XRAY_S3_ACCESS_KEY_ID/XRAY_S3_SECRET_ACCESS_KEY: connection $conn_id left as it is" \
       "(stages then use the workers' own storage environment)"
fi
