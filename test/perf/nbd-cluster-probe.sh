#!/bin/bash
# A quick probe of the whole write path: a three-node `hes node start` cluster (mTLS) on this
# machine, a 2 GiB three-replica volume exported by node 1 on a unix socket, fio's nbd engine,
# and the CPU the three node processes used per job (from /proc/PID/stat), which is the figure
# that stays comparable on a loaded machine. Not the side-by-side benchmark with Ceph: that is
# ../shared/bench/run-peers.sh with NBD_URI pointing at this export.
#
#   pnpm build && bash test/perf/nbd-cluster-probe.sh [TAG]
#   env: RT (seconds per job, default 8), DIR (default /var/tmp/hes-probe), PORT (default 21500)
set -euo pipefail
TAG=${1:-probe}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D=${DIR:-/var/tmp/hes-probe}
H="node $ROOT/packages/cli/bin/hes.mjs"
stop() { pkill -TERM -f "$D/node-" || true; sleep 3; pkill -9 -f "$D/node-" || true; }
stop
FRESH=
if [ ! -f "$D/cluster.json" ]; then
  rm -rf "$D"
  $H cluster init --nodes 3 --dir "$D" --disk-size 8GiB --base-port "${PORT:-21500}" >/dev/null
  FRESH=1
fi
for i in 1 2 3; do
  (node --initial-old-space-size=256 "$ROOT/packages/cli/bin/hes.mjs" node start --config "$D/node-$i/config.json" >"$D/node-$i.log" 2>&1 &)
done
export HES_CONFIG=$D/node-1/config.json
for _ in $(seq 1 60); do $H status 2>/dev/null | grep -q "3/3 up" && break; sleep 1; done
[ -n "$FRESH" ] && $H volume create bench --size 2GiB --replicas 3 >/dev/null
$H export bench --nbd "unix:$D/bench.sock" >/dev/null 2>&1 || true
sleep 3
U="nbd+unix:///bench?socket=$D/bench.sock"
cpu() {
  local t=0
  for p in $(pgrep -f "$D/node-"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done
  echo $t
}
run() {
  local c0 c1
  c0=$(cpu)
  fio --name=j --ioengine=nbd --uri="$U" --size=1g --time_based=1 --runtime="${RT:-8}" \
    --rw="$1" --bs="$2" --iodepth="$3" ${4:-} --output-format=json 2>/dev/null |
    python3 -c "
import json, sys
t = sys.stdin.read(); j = json.loads(t[t.index('{'):])['jobs'][0]
k = 'write' if j['write']['io_bytes'] > 0 else 'read'; x = j[k]
print(f\"$TAG $1 $2 qd$3: {x['iops']:.0f} IOPS {x['bw_bytes']/1e6:.1f} MB/s \"
      f\"p50 {x['clat_ns']['percentile']['50.000000']/1e3:.0f} us\", end='')"
  c1=$(cpu)
  echo " (node CPU $(((c1 - c0) * 10)) ms)"
}
echo "# $(date -u +%FT%TZ) $(git -C "$ROOT" rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
run write 1m 8
run randwrite 4k 32
run randwrite 4k 1 "--fsync=1"
run randread 4k 32
stop
