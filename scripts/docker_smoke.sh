#!/usr/bin/env bash
# Builds the image, starts it on the embedded demo checkpoint and writes one report through the API.
#   bash scripts/docker_smoke.sh
# BASE_IMAGE (a build argument of the Dockerfile) builds on another base, e.g. a local Ubuntu 22.04 with
# python3.11 where the NVIDIA registry cannot be reached. PORT is the host port (default 17860).
# Exit codes: 0 the report came back; 77 no Docker daemon here (nothing was tried); anything else failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "skipped: no Docker daemon reachable" >&2
    exit 77
fi
TAG=radialog:smoke
NAME=radialog-smoke-$$
PORT=${PORT:-17860}
BUILD_ARGS=()
[ -n "${BASE_IMAGE:-}" ] && BUILD_ARGS+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
GPU=()
docker info --format '{{json .Runtimes}}' | grep -q nvidia && GPU=(--gpus all)

docker build "${BUILD_ARGS[@]}" -t "$TAG" .
trap 'docker logs "$NAME" 2>&1 | tail -40; docker rm -f "$NAME" >/dev/null 2>&1 || true' EXIT
# RADIALOG_CHECKPOINT empty: the embedded demo checkpoint, which the image carries.
docker run -d --name "$NAME" "${GPU[@]}" -p "127.0.0.1:$PORT:7860" -e RADIALOG_CHECKPOINT= "$TAG" >/dev/null

URL=http://127.0.0.1:$PORT
for _ in $(seq 1 120); do
    status=$(docker inspect --format '{{.State.Health.Status}}' "$NAME" 2>/dev/null || echo gone)
    [ "$status" = gone ] && { echo "the container exited" >&2; exit 1; }
    curl --fail --silent "$URL/readyz" >/dev/null && break
    sleep 5
done
curl --fail --silent "$URL/readyz" >/dev/null || { echo "the app never became ready" >&2; exit 1; }

study=$(curl --fail --silent -F "file=@app/examples/synthetic_no_finding.png" "$URL/v1/studies")
id=$(printf '%s' "$study" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
report=$(curl --fail --silent -X POST "$URL/v1/studies/$id/report")
printf '%s' "$report" | python3 -c 'import json, sys; r = json.load(sys.stdin)["report"]; assert r.strip(), "empty report"; print(r)'
echo "docker smoke test passed: one report from $TAG"
