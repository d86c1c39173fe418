#!/usr/bin/env bash
# The local demo: ECS-like tasks (an app plus the sidecar in one network
# namespace) talking over HBONE through the sidecar, a local control plane
# serving workloads, services and L4 AuthorizationPolicy, and the seed
# scenarios' checks with one [PASS]/[FAIL] line each, policy denials included.
#
# With a running Docker engine the tasks are containers (images built here
# from this repository, nothing pulled); otherwise they are network
# namespaces. Both need root (or the docker group for the container variant).
#
# usage: scripts/demo.sh [--docker|--netns] [scripts/scenarios.sh options]
set -euo pipefail
cd "$(dirname "$0")/.."

mode=()
case "${1:-}" in
  --docker|--netns) mode=("$1"); shift ;;
esac
if [ ${#mode[@]} -eq 0 ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    mode=(--docker)
  else
    echo "demo: no running Docker engine; using network namespaces instead"
    mode=(--netns)
  fi
fi
exec scripts/scenarios.sh "${mode[@]}" "$@"
