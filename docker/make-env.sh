#!/usr/bin/env bash
# Write .env (docker-compose.yml's settings) from .env.example, every `change-me...` value replaced by a fresh
# random secret:
#   docker/make-env.sh            # writes .env at the repository root, mode 0600 (it is git-ignored)
#   docker/make-env.sh PATH       # writes PATH instead
# An existing file is never overwritten (delete it first).  The file is created with mode 0600 before any secret
# is written to it, and secrets never appear on a command line.  The Fernet key gets the form Airflow requires
# (32 random bytes, url-safe base64); other secrets are 32 hex characters.  Needs openssl or python3 on the host.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
example="$repo/.env.example"
target="${1:-$repo/.env}"
[[ -r "$example" ]] || { echo "make-env: $example not found" >&2; exit 1; }
if [[ -e "$target" || -L "$target" ]]; then
  echo "make-env: $target exists; not overwriting it (delete it first to make fresh secrets)" >&2
  exit 1
fi

random_bytes_b64() {
  if command -v openssl >/dev/null 2>&1; then openssl rand -base64 32
  else python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'; fi
}
random_hex() {
  if command -v openssl >/dev/null 2>&1; then openssl rand -hex 16
  else python3 -c 'import os; print(os.urandom(16).hex())'; fi
}

umask 077
tmp="$(mktemp "$(dirname "$target")/.env.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
chmod 600 "$tmp"
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
done < "$example" > "$tmp"
# No-clobber: a file that appeared meanwhile is not replaced.
if ! ln "$tmp" "$target" 2>/dev/null; then
  echo "make-env: could not create $target (it exists now, or the folder is not writable)" >&2
  exit 1
fi
echo "make-env: wrote $target (mode $(stat -c %a "$target"))"
