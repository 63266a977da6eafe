#!/usr/bin/env bash
# Builds ebb exactly as deploy/docker/Dockerfile does (its `go build` line,
# the output path moved to a temporary directory) and checks the binary is
# static: no program interpreter and no shared libraries, so it runs on
# distroless/static. Also checks the Dockerfile's Go image matches go.mod.
set -euo pipefail
cd "$(dirname "$0")/../.."
dockerfile=deploy/docker/Dockerfile

line=$(grep -E '^RUN .*go build ' "$dockerfile") || { echo "check-static: no 'RUN ... go build' in $dockerfile" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cmd=${line#RUN }
cmd=${cmd//\/out\/ebb/$out/ebb}
echo "check-static: $cmd"
eval "$cmd"

if [ -z "$(go version -m "$out/ebb" | grep -E 'build\s+CGO_ENABLED=0')" ]; then
  echo "check-static: binary not built with CGO_ENABLED=0" >&2; exit 1
fi
# ldd answers "not a dynamic executable" (exit 1) for a static ELF.
if ldd "$out/ebb" >/dev/null 2>&1; then
  echo "check-static: $out/ebb is dynamically linked:" >&2; ldd "$out/ebb" >&2; exit 1
fi
if command -v file >/dev/null; then
  file "$out/ebb"
  file "$out/ebb" | grep -q 'statically linked' || { echo "check-static: file does not say statically linked" >&2; exit 1; }
fi

want=$(awk '/^go /{print $2; exit}' go.mod)
grep -qE "^FROM (docker.io/library/)?golang:${want//./\\.}-" "$dockerfile" || { echo "check-static: $dockerfile does not build with golang:$want (go.mod)" >&2; exit 1; }
echo "check-static: ok, static $(du -h "$out/ebb" | cut -f1) binary, Go $want"
