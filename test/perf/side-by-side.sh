#!/bin/bash
# The side-by-side benchmark, in one run on this machine: the raw disk, Ceph RBD (3 BlueStore
# OSDs, pool size 3) and hes (three `hes node start` processes with mutual TLS, a 2 GiB volume
# with 3 replicas, exported by node 1 over NBD on a unix socket), each driven by the same fio job
# shapes from the shared bench kit (../shared/bench: run-peers.sh, fio/*.fio). Prints the kit's
# table; the node CPU of the three hes processes is sampled during each job.
#
#   pnpm build && bash test/perf/side-by-side.sh          (needs root for Ceph; ~10 min)
#   env: BENCH (the kit, default ../shared/bench next to the checkout), RUNTIME (s per job,
#        default 25), DIR (hes cluster, default /var/tmp/hes-side), PORT (default 21800),
#        TARGETS (default "local rbd nbd"). Ceph is started with the kit's ceph-cluster.sh when
#        it is not up, and stopped again at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/.." && pwd)/shared/bench}
D=${DIR:-/var/tmp/hes-side}
HES=(node --initial-old-space-size=256 "$ROOT/packages/cli/bin/hes.mjs")
[ -x "$BENCH/run-peers.sh" ] || { echo "no bench kit at $BENCH (set BENCH)" >&2; exit 2; }
for tool in fio nbdinfo; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run $BENCH/install.sh" >&2; exit 2; }
done

stop_hes() { pkill -TERM -f "$D/node-" || true; sleep 3; pkill -9 -f "$D/node-" || true; }
CEPH_STARTED=
cleanup() {
  stop_hes
  if [ -n "$CEPH_STARTED" ]; then bash "$BENCH/ceph-cluster.sh" down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

stop_hes
rm -rf "$D"
"${HES[@]}" cluster init --nodes 3 --dir "$D" --disk-size 8GiB --base-port "${PORT:-21800}" >/dev/null
for i in 1 2 3; do
  ("${HES[@]}" node start --config "$D/node-$i/config.json" >"$D/node-$i.log" 2>&1 &)
done
export HES_CONFIG=$D/node-1/config.json
up=
for _ in $(seq 1 60); do
  if "${HES[@]}" status 2>/dev/null | grep -q "3/3 up"; then up=1; break; fi
  sleep 1
done
[ -n "$up" ] || { echo "the hes cluster did not come up; logs in $D" >&2; exit 1; }
"${HES[@]}" volume create bench --size 2GiB --replicas 3 >/dev/null
"${HES[@]}" export bench --nbd "unix:$D/bench.sock" >/dev/null
pids=()
for i in 1 2 3; do pids+=("hes-node-$i=$(pgrep -f "$D/node-$i/config.json" | head -1)"); done

TARGETS=${TARGETS:-local rbd nbd}
if [[ " $TARGETS " == *" rbd "* ]] && ! timeout 15 bash "$BENCH/ceph-cluster.sh" status >/dev/null 2>&1; then
  CEPH_STARTED=1
  bash "$BENCH/ceph-cluster.sh" down >/dev/null 2>&1 || true # leftovers of an earlier run
  bash "$BENCH/ceph-cluster.sh" up
fi
echo "# side-by-side $(date -u +%FT%TZ) hes $(git -C "$ROOT" rev-parse --short HEAD)" \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086
NBD_URI="nbd+unix:///bench?socket=$D/bench.sock" NBD_PIDS="${pids[*]}" RESULTS="$D/results" \
  bash "$BENCH/run-peers.sh" $TARGETS
