#!/usr/bin/env bash
# The workshop's seed scenarios end to end, with a [PASS]/[FAIL] line per check:
#   1  one ECS cluster: EKS->ECS, ECS->EKS, ECS->ECS by hostname, ECS->external
#   2  two ECS clusters: cross-cluster calls and the six authorization exercises
#   3  two networks (accounts): calls through the east-west gateway, failover
#
# usage: scripts/scenarios.sh [--docker|--netns] [--keep] [--profile P] [--scenarios 1,2,3]
#
#   --docker     (default) build the images (docker/build-local.sh), start
#                docker/compose.yaml, run the checks against the containers
#   --netns      the same checks on network namespaces, without Docker
#                (cargo test -p zs-e2e --test scenarios); needs root
#   --keep       leave the containers running afterwards (docker)
#   --profile    cargo profile of the images (default ci-release; release is
#                the size-tuned build, several minutes longer)
#
# Exits non-zero if any check fails. Needs root or a user in the docker group
# for --docker, root for --netns.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=docker
keep=0
profile=ci-release
scenarios=1,2,3
while [ $# -gt 0 ]; do
  case "$1" in
    --docker) mode=docker; shift ;;
    --netns) mode=netns; shift ;;
    --keep) keep=1; shift ;;
    --profile) profile="$2"; shift 2 ;;
    --scenarios) scenarios="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scenarios.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$mode" = netns ]; then
  filter=()
  for s in ${scenarios//,/ }; do filter+=("scenario_$s"); done
  exec cargo test --locked -p zs-e2e --test scenarios -- --nocapture --test-threads 1 "${filter[@]}"
fi

# shellcheck source=docker/compose.sh
. docker/compose.sh

project=zs-seed
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/zs-seed.XXXXXX")
bin=target/x86_64-unknown-linux-gnu/$profile

teardown() {
  local status=$?
  if [ "$keep" = 1 ]; then
    echo "Left running (--keep): compose project $project, run directory $run_dir."
    echo "  set -a; . $run_dir/compose.env; set +a"
    echo "  $(compose_cmd) -f docker/compose.yaml -p $project exec c1-shell mesh-curl http://echo-service.ecs.local:8080/"
    echo "  $(compose_cmd) -f docker/compose.yaml -p $project down -v   # to stop it"
  else
    compose -p "$project" down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$run_dir"
  fi
  exit "$status"
}

step() { printf '\n--- %s\n' "$*"; }

step "building the images (profile $profile)"
docker/build-local.sh --profile "$profile" sidecar local-istiod harness

step "preparing $run_dir: mesh CA, gateway certificate, mesh file, bootstrap tokens"
"$bin/seed-scenarios" prepare --dir "$run_dir" --local-istiod "$bin/local-istiod"
set -a
# shellcheck disable=SC1091
. "$run_dir/compose.env"
set +a

step "starting docker/compose.yaml (project $project)"
compose -p "$project" down -v --remove-orphans >/dev/null 2>&1 || true
trap teardown EXIT
start=$SECONDS
if ! compose -p "$project" up -d; then
  compose -p "$project" ps || true
  compose -p "$project" logs --tail 30 || true
  exit 1
fi
echo "all tasks healthy in $((SECONDS - start)) s"

step "checks"
if ! "$bin/seed-scenarios" check --project "$project" --dir "$run_dir" --scenarios "$scenarios"; then
  echo
  echo "Some checks failed. Sidecar logs (last lines):"
  compose -p "$project" logs --tail 20 c1-echo-sidecar c1-shell-sidecar ew-gateway || true
  exit 1
fi
