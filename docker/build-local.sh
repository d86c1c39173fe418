#!/usr/bin/env bash
# Builds the container images on this machine without pulling anything: the
# binaries are built here with cargo, statically linked (glibc included, so
# they need no runtime libraries), and each image is FROM scratch with a root
# filesystem assembled next to it (binaries, CA bundle, passwd/group, /tmp).
#
# usage: docker/build-local.sh [--profile release|ci-release] [--tag TAG] [IMAGE...]
#
# IMAGE is any of (default: all three)
#   sidecar       ztunnel-sidecar:TAG     the sidecar (docker/Dockerfile.scratch)
#   local-istiod  local-istiod:TAG        the local control plane
#   harness       zs-harness:TAG          echo-app, mesh-curl, ew-gateway, task-metadata
#
# --profile applies to the sidecar (default release: fat LTO, the size that
# ships); the other images always use the quicker ci-release profile. The
# static binaries stay in target/x86_64-unknown-linux-gnu/<profile>/, where
# the scripts also run local-istiod and seed-scenarios from.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
tag=dev
images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    sidecar|local-istiod|harness) images+=("$1"); shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-local.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=(sidecar local-istiod harness)

target=x86_64-unknown-linux-gnu
tools_profile=ci-release
want() { local i; for i in "${images[@]}"; do [ "$i" = "$1" ] && return 0; done; return 1; }

# The static link: glibc's static archive (libc6-dev) is all it needs.
export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
# The release sidecar is linked with the functions it runs placed together
# (crates/sidecar/build.rs, benches/symbol-order.sh): idle RSS 8.2 -> 4.5 MiB.
if [ "$profile" = release ]; then
  export ZTUNNEL_SIDECAR_SYMBOL_ORDER="$PWD/docker/sidecar.symbol-order"
fi

build() { # profile, then cargo package/bin arguments
  local p="$1"; shift
  local start=$SECONDS
  echo "==> cargo build --profile $p --target $target $*"
  cargo build --locked --profile "$p" --target "$target" "$@"
  echo "    built in $((SECONDS - start)) s"
}

sidecar_args=(-p ztunnel-sidecar --bin ztunnel-sidecar)
tools_args=()
want local-istiod && tools_args+=(-p local-istiod --bin local-istiod)
# seed-scenarios runs on this host (scripts/scenarios.sh), the others in the harness image.
want harness && tools_args+=(-p zs-e2e --bin echo-app --bin mesh-curl --bin ew-gateway
                            --bin task-metadata --bin seed-scenarios)
if want sidecar && [ "$profile" = "$tools_profile" ]; then
  build "$profile" "${sidecar_args[@]}" "${tools_args[@]}"
else
  want sidecar && build "$profile" "${sidecar_args[@]}"
  [ ${#tools_args[@]} -gt 0 ] && build "$tools_profile" "${tools_args[@]}"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Assembles a root filesystem and builds an image from it.
#   image NAME DOCKERFILE PROFILE BINARY...
image() {
  local name="$1" dockerfile="$2" p="$3"; shift 3
  local ctx="$work/$name" bin
  mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp"
  for bin in "$@"; do
    # The profile keeps the symbol table (see Cargo.toml); the image does not need it.
    strip --strip-all -o "$ctx/rootfs/usr/local/bin/$bin" "target/$target/$p/$bin"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nztunnel:x:1337:1337:ztunnel:/nonexistent:/sbin/nologin\n' \
    > "$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\nztunnel:x:1337:\n' > "$ctx/rootfs/etc/group"
  chmod 1777 "$ctx/rootfs/tmp"
  if [ "$name" = ztunnel-sidecar ]; then
    ln -s ztunnel-sidecar "$ctx/rootfs/usr/local/bin/ztunnel"
  fi
  cp "docker/$dockerfile" "$ctx/Dockerfile"
  # The classic builder: it needs no buildx plugin and pulls nothing for FROM scratch.
  local out
  if ! out=$(DOCKER_BUILDKIT=0 docker build --quiet --tag "$name:$tag" "$ctx" 2>&1); then
    echo "$out" >&2
    return 1
  fi
  printf '==> %-22s %6.1f MB\n' "$name:$tag" \
    "$(docker image inspect --format '{{.Size}}' "$name:$tag" | awk '{print $1 / 1000000}')"
}

if [ ! -r /etc/ssl/certs/ca-certificates.crt ]; then
  echo "build-local.sh: /etc/ssl/certs/ca-certificates.crt is missing (install ca-certificates)" >&2
  exit 1
fi
want sidecar && image ztunnel-sidecar Dockerfile.scratch "$profile" ztunnel-sidecar
want local-istiod && image local-istiod Dockerfile.tools "$tools_profile" local-istiod
want harness && image zs-harness Dockerfile.tools "$tools_profile" \
  echo-app mesh-curl ew-gateway task-metadata
exit 0
