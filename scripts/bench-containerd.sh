#!/usr/bin/env bash
# make bench-containerd: unpack time of a 1 GiB single-layer image through
# Debian's containerd, plain vs encrypted (coffer ctd-decoder as stream
# processor), for three 1 GiB layers: incompressible data uncompressed (tar)
# and gzipped (gz, the worst case for the decoder: nothing else to do), and
# ~2.75 GiB of compressible text gzipped to ~1 GiB (text, like typical
# layers); plus the decoder's peak RSS. Unpack alone is timed (`ctr snapshots unpack`, after an untimed
# import --no-unpack); the committed snapshot is removed between runs. Plain
# and encrypted runs alternate; medians of RUNS. Needs root, containerd,
# ctr, skopeo, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1024}
RUNS=${RUNS:-3}
SNAP=${SNAPSHOTTER:-overlayfs}
COFFER=$(realpath "${COFFER:-./bin/coffer}")
for t in containerd ctr skopeo /usr/bin/time openssl; do
  command -v "$t" >/dev/null || { echo "bench-containerd: $t is required" >&2; exit 1; }
done
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ctd-bench.XXXXXX")
CPID=
cleanup() {
  [ -n "$CPID" ] && kill "$CPID" 2>/dev/null && wait "$CPID" 2>/dev/null || true
  grep " $W/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

echo "generating a ${SIZE} MiB single-layer image in $W ..."
go run ./scripts/mkimage -size "$SIZE" -out "$W/tar" -tag v1
skopeo copy -q --dest-compress --dest-compress-format gzip "oci:$W/tar:v1" "oci:$W/gz:v1"
go run ./scripts/mkimage -text -size $((SIZE * 11 / 4)) -out "$W/text-tar" -tag v1
skopeo copy -q --dest-compress --dest-compress-format gzip "oci:$W/text-tar:v1" "oci:$W/text:v1"
rm -rf "$W/text-tar"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$W/key.pem"
openssl pkey -in "$W/key.pem" -pubout -out "$W/pub.pem"
mkdir -m 700 "$W/keys" && cp "$W/key.pem" "$W/keys/"
for v in tar gz text; do
  skopeo copy -q "oci:$W/$v:v1" "oci-archive:$W/$v-plain.tar:v1"
  "$COFFER" encrypt --recipient "jwe:$W/pub.pem" "oci:$W/$v:v1" "oci-archive:$W/$v-enc.tar:v1" >/dev/null
done

# The decoder runs under GNU time, which appends "seconds maxrss_kib".
cat >"$W/decoder" <<EOF
#!/bin/sh
exec /usr/bin/time -a -o "$W/decoder.times" -f "%e %M" "$COFFER" "\$@"
EOF
chmod +x "$W/decoder"
printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/c.sock"\n[ttrpc]\n  address = "%s/c.sock.ttrpc"\n' "$W" "$W" "$W" "$W" >"$W/config.toml"
"$COFFER" runtime install containerd --config "$W/config.toml" --coffer "$W/decoder" --keys-path "$W/keys" --containerd-root "$W/root" --containerd-address "$W/c.sock" >/dev/null
containerd --config "$W/config.toml" >"$W/containerd.log" 2>&1 &
CPID=$!
for _ in $(seq 100); do ctr -a "$W/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
C() { ctr -a "$W/c.sock" -n bench "$@"; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for v in tar gz text; do
  for k in plain enc; do
    C images import --no-unpack --base-name "bench/$v-$k" "$W/$v-$k.tar" >/dev/null
  done
done
manifest() { C images ls | awk -v r="bench/$1:v1" '$1 == r {print $3}'; }
chain() { # single layer: the chain ID is the diffID
  skopeo inspect --config "oci:$W/$1:v1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rootfs"]["diff_ids"][0])'
}
for v in tar gz text; do
  ch=$(chain "$v")
  : >"$W/$v-plain.s"; : >"$W/$v-enc.s"
  for i in $(seq "$RUNS"); do
    for k in plain enc; do
      C snapshots --snapshotter "$SNAP" rm "$ch" >/dev/null 2>&1 || true
      sync
      /usr/bin/time -f "%e" -a -o "$W/$v-$k.s" ctr -a "$W/c.sock" -n bench snapshots --snapshotter "$SNAP" unpack "$(manifest "$v-$k")" >/dev/null
    done
  done
  p=$(median <"$W/$v-plain.s"); e=$(median <"$W/$v-enc.s")
  sz=$(skopeo inspect --raw "oci:$W/$v:v1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["size"] >> 20)')
  printf '%-4s layer (%s MiB blob, %s): plain unpack %ss, encrypted through coffer ctd-decoder %ss (%+.0f%%)  [runs: plain %s | enc %s]\n' \
    "$v" "$sz" "$SNAP" "$p" "$e" "$(awk -v e="$e" -v p="$p" 'BEGIN {print (e/p - 1)*100}')" "$(tr '\n' ' ' <"$W/$v-plain.s")" "$(tr '\n' ' ' <"$W/$v-enc.s")"
done
echo "decoder runs (seconds, peak RSS KiB): $(tr '\n' ';' <"$W/decoder.times")"
echo "decoder peak RSS: $(cut -d' ' -f2 "$W/decoder.times" | sort -n | tail -1) KiB"
