# Sourced by scripts/scenarios.sh and scripts/demo.sh: `compose ARGS...` runs
# Docker Compose on docker/compose.yaml with whichever is installed, the v2
# plugin (`docker compose`) or the standalone v1 `docker-compose`.

compose_cmd() {
  if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  elif command -v docker-compose >/dev/null 2>&1; then
    echo "docker-compose"
  else
    echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
    return 1
  fi
}

compose() {
  local cmd
  cmd=$(compose_cmd) || return 1
  # shellcheck disable=SC2086 # "docker compose" is two words
  $cmd -f docker/compose.yaml "$@"
}
