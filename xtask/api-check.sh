#!/usr/bin/env bash
# The HTTP API against its OpenAPI document: schemathesis (from PyPI) generates requests
# from docs/api/openapi.yaml, good and bad, and checks every answer against the document
# (status codes, content types, headers, bodies), that bad input is refused with a 4xx and
# good input accepted, that the token is enforced, and that nothing answers 5xx.
# nodepoold runs on the fake cloud with a SQLite store in a temporary folder.
#
# Env: ST_VENV (default ${TMPDIR:-/tmp}/nodepool-schemathesis), ST_EXAMPLES (default 30),
# NODEPOOLD_FEATURES (cargo features nodepoold is built with, such as mysql).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${ST_VENV:-${TMPDIR:-/tmp}/nodepool-schemathesis}
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi
cd "$root"
cargo build -q --locked -p nodepoold ${NODEPOOLD_FEATURES:+--features "$NODEPOOLD_FEATURES"}
target=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
echo "$token" > "$dir/token"
cat > "$dir/nodepool.yaml" <<EOF
dburi: sqlite://$dir/nodepool.sqlite
api:
  listen: 127.0.0.1:$port
  token-file: $dir/token
  rate: 100000
labels:
  - name: small
    image: base
    min-ready: 2
    providers: [{name: fake1}]
providers:
  - name: fake1
    driver: fake
    max-servers: 4
    rate: 0.01
    images:
      - {name: base, base-image: Ubuntu 22.04, min-ram: 2048}
EOF
"$target/debug/nodepoold" -c "$dir/nodepool.yaml" 2> "$dir/daemon.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 300); do
  grep -q "API listening" "$dir/daemon.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/daemon.log"; echo "nodepoold exited" >&2; exit 1; }
  sleep 0.1
done
# schemathesis keeps a cache in the folder it runs in: the temporary one, not the checkout.
cd "$dir"
"$venv/bin/st" run "$root/docs/api/openapi.yaml" \
  --url "http://127.0.0.1:$port" \
  --checks all \
  --max-examples "${ST_EXAMPLES:-30}" \
  --request-timeout 70 \
  --seed 20141125 \
  -H "Authorization: Bearer $token"
if grep -q "panicked" "$dir/daemon.log"; then
  grep -A5 "panicked" "$dir/daemon.log" >&2
  exit 1
fi
