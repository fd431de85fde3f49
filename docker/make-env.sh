#!/usr/bin/env bash
# Print .env.example with every `change-me...` value replaced by a fresh random secret:
#   docker/make-env.sh > .env
# The Fernet key gets the form Airflow requires (32 random bytes, url-safe base64); other secrets are 32 hex
# characters (MinIO wants >= 8).  Needs openssl or python3 on the host.
set -euo pipefail

example="$(cd "$(dirname "$0")/.." && pwd)/.env.example"
[[ -r "$example" ]] || { echo "make-env: $example not found" >&2; exit 1; }

random_bytes_b64() {
  if command -v openssl >/dev/null 2>&1; then openssl rand -base64 32
  else python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'; fi
}
random_hex() {
  if command -v openssl >/dev/null 2>&1; then openssl rand -hex 16
  else python3 -c 'import os; print(os.urandom(16).hex())'; fi
}

while IFS= read -r line || [[ -n "$line" ]]; do
  if [[ "$line" =~ ^([A-Z0-9_]+)=change-me ]]; then
    name="${BASH_REMATCH[1]}"
    if [[ "$name" == AIRFLOW_FERNET_KEY ]]; then
      value="$(random_bytes_b64 | tr '+/' '-_')"
    else
      value="$(random_hex)"
    fi
    printf '%s=%s\n' "$name" "$value"
  else
    printf '%s\n' "$line"
  fi
done < "$example"
