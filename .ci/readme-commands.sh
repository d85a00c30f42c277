#!/usr/bin/env bash
# Runs every command the README shows (the forms in its ```sh blocks, with concrete arguments),
# from the root of the checkout, as a user of a fresh clone would. `cargo xtask test` runs it;
# xtask's `readme_commands_are_all_run` test fails when the README gains a command this script
# does not run. Benchmarks (`tacit bench`, `tacit-server bench`, `cargo xtask bench*`) are commands of
# their own and are not run here.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=tests/data/hh_harmless_dev512.safetensors
W=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
step() { echo "readme\$ $*" >&2; "$@"; }

# The command line.
step cargo build --release
T=target/release/tacit
step $T eval --data "$DATA" --protocol confounded --seeds 1 --methods naive,ips,oracle \
  --json "$W/eval.json" --markdown "$W/eval.md"
grep -q '"ips"' "$W/eval.json"
step $T eval --protocol users --data tests/data/users_dev.safetensors --seeds 1 --users 8 --new-users 4 \
  --turns 40 --rounds 2 --json "$W/users.json" --markdown "$W/users.md"
grep -q '"new_users_curve"' "$W/users.json"
step $T eval --data "$DATA" --protocol confounded --seeds 1 --methods naive --backend gpu
step $T init --dim 384 --hidden 128 --out "$W/w.safetensors"
step $T init --dim 384 --hidden 128 --objective beta --out "$W/w-beta.safetensors"
step $T train --data "$DATA" --objective noise-ips --init "$W/w.safetensors" --epochs 2 --out "$W/trained.safetensors"
step $T score --weights "$W/trained.safetensors" --data "$DATA" --out "$W/scores.json"
test -s "$W/scores.json"

# Installing the binaries (same profile and target directory: nothing is rebuilt).
step cargo install --locked --path . --root "$W/install" --target-dir target
step cargo install --locked --path server --root "$W/install" --target-dir target
"$W/install/bin/tacit" --help > /dev/null
"$W/install/bin/tacit-server" --help > /dev/null

# The sync server.
step cargo build --release -p tacit-server
S=target/release/tacit-server
# The release folder (same profile and target directory: nothing is rebuilt); Docker itself is
# not on these machines, so the image is not built here.
step cargo xtask release
(cd target/dist && sha256sum --check --quiet SHA256SUMS)
grep -q '^COPY tacit-server ' target/dist/Containerfile
target/dist/tacit-server serve --help > /dev/null
DB="sqlite://$W/sync.db"
ADMIN=$(step $S token create --db "$DB" --client ops --admin | tail -n 1)
ALICE=$(step $S token create --db "$DB" --client alice | tail -n 1)
step $S token create --db "$DB" --client kiosk --model default | tail -n 1 > "$W/kiosk"
KIOSK=$(cat "$W/kiosk")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The README's two serve lines in one: a listen address, and a page origin allowed (CORS).
echo "readme\$ $S serve --listen 127.0.0.1:$PORT --db $DB --allow-origin https://app.example &" >&2
$S serve --listen "127.0.0.1:$PORT" --db "$DB" --allow-origin https://app.example 2> "$W/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && break
  sleep 0.1
done
step curl -fsS -X PUT -H "Authorization: Bearer $ADMIN" --data-binary "@$W/w.safetensors" \
  "http://127.0.0.1:$PORT/v1/models/default"
echo
# The allowed origin's preflight is answered with its CORS headers; another origin's is refused.
preflight() {
  curl -s -o /dev/null -D - -w '%{http_code}\n' -X OPTIONS -H "Origin: $1" \
    -H 'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: authorization' \
    "http://127.0.0.1:$PORT/v1/models/default/updates"
}
preflight https://app.example > "$W/preflight.txt"
tail -n 1 "$W/preflight.txt" | grep -qx 204 || { echo "the allowed origin's preflight: $(cat "$W/preflight.txt")" >&2; exit 1; }
tr -d '\r' < "$W/preflight.txt" | grep -qix 'access-control-allow-origin: https://app.example' || { echo "no Access-Control-Allow-Origin: $(cat "$W/preflight.txt")" >&2; exit 1; }
code=$(preflight https://other.example | tail -n 1)
[ "$code" = 403 ] || { echo "another origin's preflight answered $code" >&2; exit 1; }
# The kiosk's token reads its model, and no other.
curl -fsS -H "Authorization: Bearer $KIOSK" "http://127.0.0.1:$PORT/v1/models/default/meta" > /dev/null
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KIOSK" "http://127.0.0.1:$PORT/v1/models/other/meta")
[ "$code" = 403 ] || { echo "the kiosk's token on another model answered $code" >&2; exit 1; }
cp "$W/trained.safetensors" "$W/local.safetensors"
step $T sync --url "http://127.0.0.1:$PORT" --token "$ALICE" --model default \
  --weights "$W/local.safetensors" --state "$W/sync-state" --n-examples 20 | tee "$W/sync1.txt"
# The second pass pushes what clipping held back of the first delta (the reference moved by the
# clipped delta only), or nothing when nothing was clipped.
step $T sync --url "http://127.0.0.1:$PORT" --token "$ALICE" --model default \
  --weights "$W/local.safetensors" --state "$W/sync-state" | tee "$W/sync2.txt"
first=$(sed -n 's/^pushed \([0-9]*\),.*/\1/p' "$W/sync1.txt")
second=$(sed -n 's/^pushed \([0-9]*\),.*/\1/p' "$W/sync2.txt")
[ "$first" = 1 ] || { echo "the first sync pushed ${first:-nothing}" >&2; exit 1; }
pushed=$((first + second))
curl -fsS -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$PORT/v1/models/default/meta" > "$W/meta.json"
grep -q "\"accepted_updates\":$pushed[,}]" "$W/meta.json" || { echo "server accepted other than the $pushed pushes: $(cat "$W/meta.json")" >&2; exit 1; }
step $S token revoke --db "$DB" --client alice
# A revoked token is refused.
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" "http://127.0.0.1:$PORT/v1/models/default/meta")
[ "$code" = 401 ] || { echo "revoked token answered $code" >&2; exit 1; }
kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=

# The demo: sync server and chat page, stopped once the page answers.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "readme\$ cargo xtask demo --port $PORT" >&2
setsid cargo xtask demo --port "$PORT" > "$W/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 600); do
  curl -fsS "http://127.0.0.1:$PORT/" 2> /dev/null | grep -qi '<html' && break
  kill -0 "$DEMO_PID" 2> /dev/null || { cat "$W/demo.log" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/" | grep -qi '<html' || { cat "$W/demo.log" >&2; exit 1; }
kill -TERM -- "-$DEMO_PID"; wait "$DEMO_PID" || true
echo "readme: every README command ran" >&2
