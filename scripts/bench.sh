#!/usr/bin/env bash
# make bench: coffer vs Debian skopeo (and skopeo+umoci for pull) on a generated
# single-layer image. SIZE (MiB, default 1024) and RUNS (default 3) tune it;
# medians are reported with the min-max spread and peak RSS from GNU time.
# BUSY=1 runs one CPU-bound process (sha256sum /dev/zero) beside every run,
# as a shared machine would.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1024}
RUNS=${RUNS:-3}
COFFER=${COFFER:-./bin/coffer}
for t in skopeo /usr/bin/time openssl; do
  command -v "$t" >/dev/null || { echo "bench: $t is required (apt-get install skopeo time openssl)" >&2; exit 1; }
done
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/coffer-bench.XXXXXX")
REG_PID=
BUSY_PID=
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; [ -n "$BUSY_PID" ] && kill "$BUSY_PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

echo "generating a ${SIZE} MiB single-layer image in $W ..."
go run ./scripts/mkimage -size "$SIZE" -out "$W/src" -tag v1
openssl genrsa -out "$W/priv.pem" 2048 2>/dev/null
openssl rsa -in "$W/priv.pem" -pubout -out "$W/pub.pem" 2>/dev/null

# run NAME CMD... : appends "seconds maxrss_kib" to $W/NAME.times
# Each run starts with no dirty pages (sync, untimed), so no tool pays for
# the previous one's writeback.
run() {
  local name=$1; shift
  sync
  if ! /usr/bin/time -f "%e %M" -o "$W/t" "$@" >"$W/out" 2>&1; then
    echo "bench: $name failed:" >&2; cat "$W/out" >&2; exit 1
  fi
  cat "$W/t" >>"$W/$name.times"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
secs() { cut -d' ' -f1 <"$W/$1.times" | median; }
spread() { cut -d' ' -f1 <"$W/$1.times" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.2f-%.2fs", lo, hi}'; }
rss() { cut -d' ' -f2 <"$W/$1.times" | sort -n | tail -1; }

if [ "${BUSY:-0}" = 1 ]; then
  sha256sum /dev/zero &
  BUSY_PID=$!
  echo "(a CPU-bound sha256sum shares the machine during every run)"
fi
for i in $(seq "$RUNS"); do
  rm -rf "$W"/c-enc "$W"/s-enc "$W"/c-dec "$W"/s-dec
  run coffer-encrypt "$COFFER" encrypt --recipient "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/c-enc:v1"
  rm -rf "$W"/c-enc-nv
  run coffer-encrypt-nv "$COFFER" encrypt --no-verify-source --recipient "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/c-enc-nv:v1"
  run skopeo-encrypt skopeo copy -q --encryption-key "jwe:$W/pub.pem" "oci:$W/src:v1" "oci:$W/s-enc:v1"
  run coffer-decrypt "$COFFER" decrypt --key "$W/priv.pem" "oci:$W/c-enc:v1" "oci:$W/c-dec:v1"
  run skopeo-decrypt skopeo copy -q --decryption-key "$W/priv.pem" "oci:$W/s-enc:v1" "oci:$W/s-dec:v1"
done

report() { # op [coffer-variant]
  local c s cv=${2:-$1}
  c=$(secs "coffer-$cv"); s=$(secs "skopeo-$1")
  awk -v op="$cv" -v c="$c" -v s="$s" -v mib="$SIZE" -v cr="$(rss "coffer-$cv")" -v sr="$(rss "skopeo-$1")" \
    -v cs="$(spread "coffer-$cv")" -v ss="$(spread "skopeo-$1")" 'BEGIN {
    printf "%-10s coffer %7.1f MiB/s (%5.2fs [%s], peak RSS %4d MiB)   skopeo %7.1f MiB/s (%5.2fs [%s], peak RSS %4d MiB)   ratio %.2fx\n",
      op, mib/c, c, cs, cr/1024, mib/s, s, ss, sr/1024, s/c }'
}
echo
echo "== ${SIZE} MiB single-layer image, oci -> oci, median of $RUNS runs (jwe, RSA-2048)"
report encrypt
report encrypt encrypt-nv
report decrypt

if command -v docker-registry >/dev/null && command -v umoci >/dev/null; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$W/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $W/registry}}
http: {addr: 127.0.0.1:$PORT}
log: {level: error}
YML
  docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  skopeo copy -q --dest-tls-verify=false "oci:$W/c-enc:v1" "docker://127.0.0.1:$PORT/bench/app:enc"
  for i in $(seq "$RUNS"); do
    rm -rf "$W"/rootfs "$W"/rootfs.config.json "$W"/pulled "$W"/bundle
    run coffer-pull "$COFFER" pull --key "$W/priv.pem" "docker://127.0.0.1:$PORT/bench/app:enc" "$W/rootfs"
    run skopeo-pull sh -c "skopeo copy -q --src-tls-verify=false --decryption-key '$W/priv.pem' 'docker://127.0.0.1:$PORT/bench/app:enc' 'oci:$W/pulled:v1' && umoci unpack --image '$W/pulled:v1' '$W/bundle'"
  done
  echo "== pull: local registry -> rootfs (coffer pull vs skopeo copy --decryption-key + umoci unpack)"
  report pull
else
  echo "(pull benchmark skipped: needs docker-registry and umoci)"
fi
