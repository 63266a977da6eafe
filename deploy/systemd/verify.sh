#!/usr/bin/env bash
# Verifies deploy/systemd/ebb.service with systemd-analyze verify, inside a
# scratch root that holds the unit and an ebb binary at the path ExecStart
# names (verify checks the executable exists), so nothing is installed on
# the machine. Prints systemd-analyze's findings; any finding fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin"
install -m 0644 deploy/systemd/ebb.service "$root/etc/systemd/system/ebb.service"
# The targets and units it depends on, as this machine has them.
mkdir -p "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
CGO_ENABLED=0 go build -trimpath -o "$root/usr/local/bin/ebb" ./cmd/ebb
out=$(systemd-analyze verify --root="$root" ebb.service 2>&1) || { echo "$out" >&2; echo "systemd verify: failed" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "systemd verify: findings above" >&2
  exit 1
fi
echo "systemd verify: ok"
