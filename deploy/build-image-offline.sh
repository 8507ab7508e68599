#!/usr/bin/env bash
# Builds caf-broker's image without pulling anything: the `offline` target of
# deploy/Containerfile (FROM scratch) over a context staged here from a binary
# built on this host, the shared libraries it links (ldd), the host's CA bundle
# and a passwd/group naming the numeric user 65532.
#
#   deploy/build-image-offline.sh [BINARY] [TAG]
#     BINARY  default target/release/caf-broker, else target/debug/caf-broker
#     TAG     default localhost/caf-broker:offline
#   ENGINE=docker deploy/build-image-offline.sh   (default: podman)
#
# The image runs on any host; what it needs from the build host is a glibc no
# newer than the one it ships, which holds by construction (it ships the host's).
set -euo pipefail
cd "$(dirname "$0")/.."

engine="${ENGINE:-podman}"
binary="${1:-}"
if [ -z "$binary" ]; then
  for candidate in target/release/caf-broker target/debug/caf-broker; do
    if [ -x "$candidate" ]; then binary="$candidate"; break; fi
  done
fi
tag="${2:-localhost/caf-broker:offline}"
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
  echo "build-image-offline: no caf-broker binary; run cargo build --release (or pass its path)" >&2
  exit 1
fi

context="$(mktemp -d "${TMPDIR:-/tmp}/caf-broker-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
root="$context/rootfs"
install -D -m 0755 "$binary" "$root/usr/local/bin/caf-broker"

# Every shared object the loader resolves, at the path it resolves it from,
# plus the loader itself (the "/lib64/ld-linux..." line has no "=>"). Mode
# 0755 as on Debian: the kernel execs the loader, which needs its x bit.
while read -r lib; do
  [ -n "$lib" ] || continue
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done < <(ldd "$binary" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(/ { print $1 }')
loader_count=$(find "$root" -name 'ld-linux*' | wc -l)
if [ "$loader_count" -eq 0 ]; then
  echo "build-image-offline: ldd named no dynamic loader for $binary" >&2
  exit 1
fi

# The CA bundle (Debian's path, which rustls-native and OpenSSL-style clients read).
ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [ -r "$ca_bundle" ]; then
  install -D -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
else
  echo "build-image-offline: no CA bundle at $ca_bundle (install ca-certificates)" >&2
  exit 1
fi

# Names for the numeric user and group, as distroless's `nonroot`.
install -d "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
install -d -m 0755 "$root/etc/caf-broker"
# The audit directory, owned by the user (Containerfile: COPY --chown); its
# parents belong to root.
install -d -m 0755 "$root/var/lib/caf-broker"
install -d -m 0700 "$context/audit"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
cp deploy/Containerfile "$context/Containerfile"
"$engine" build --target offline \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  -f "$context/Containerfile" -t "$tag" "$context"
echo "built $tag from $binary"
