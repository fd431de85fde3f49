#!/usr/bin/env bash
# One-shot initialisation of the deployment (docker-compose.yml's airflow-init service); safe to run again:
#   1. refuse placeholder or empty secrets (the "change-me" values of .env.example),
#   2. migrate the metadata database,
#   3. the admin user's password for the simple auth manager (file read by the api-server),
#   4. scripts/airflow-setup.sh: pool `gpu` (XRAY_GPU_SLOTS) and the object-storage connection (XRAY_S3_*).
set -euo pipefail

placeholder=0
# Every variable, not a list: a placeholder may hide inside a URL (the database's or the broker's password).
while IFS= read -r name; do
  value="${!name:-}"
  if [[ "$value" == *change-me* ]]; then
    echo "airflow-init: $name still holds a .env.example placeholder; set real secrets in .env" \
         "(docker/make-env.sh writes them)" >&2
    placeholder=1
  fi
done < <(compgen -e)
for name in AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY \
            AIRFLOW_ADMIN_PASSWORD XRAY_S3_SECRET_ACCESS_KEY; do
  if [[ -z "${!name:-}" ]]; then
    echo "airflow-init: $name is empty; set it in .env" >&2
    placeholder=1
  fi
done
[[ "$placeholder" == 0 ]] || exit 2

echo "airflow-init: migrating the metadata database"
airflow db migrate

passwords="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?the compose file sets it}"
users="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:?the compose file sets it}"
admin="${users%%:*}"
# Written through python so the password never appears in argv; umask: readable by the airflow user only.
( umask 077 && ADMIN="$admin" python - "$passwords" <<'PY'
import json, os, sys

with open(sys.argv[1], "w", encoding="utf-8") as fh:
    json.dump({os.environ["ADMIN"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
PY
)
echo "airflow-init: password of user '$admin' written to $passwords"

XRAY_SKIP_MIGRATE=1 bash "$(dirname "$0")/../scripts/airflow-setup.sh"
echo "airflow-init: done"
