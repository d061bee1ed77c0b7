#!/bin/bash
# Failover probe: a three-node `hes node start` cluster (mTLS), a 1 GiB three-replica volume
# exported by node 1 and written for 3 s (random 4 KiB over 64 MiB, depth 4), then kill -9 of
# node 1 (the owner, and the Raft leader when it leads) and `hes export --takeover` on node 2.
# Prints how long the export took and when the first write on the new owner was acknowledged,
# then node 2's debug lines that time the open (lease, seal, report, reconcile).
#
#   pnpm build && bash test/perf/takeover-probe.sh
#   env: DIR (default /var/tmp/hes-takeover), PORT (default 21900)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D=${DIR:-/var/tmp/hes-takeover}
HES=(node --initial-old-space-size=256 "$ROOT/packages/cli/bin/hes.mjs")
stop() { pkill -TERM -f "$D/node-" || true; sleep 2; pkill -9 -f "$D/node-" || true; }
trap stop EXIT
stop
rm -rf "$D"
"${HES[@]}" cluster init --nodes 3 --dir "$D" --disk-size 2GiB --base-port "${PORT:-21900}" >/dev/null
for i in 1 2 3; do
  (HES_LOG_LEVEL=debug "${HES[@]}" node start --config "$D/node-$i/config.json" >"$D/node-$i.log" 2>&1 &)
done
export HES_CONFIG=$D/node-1/config.json
for _ in $(seq 1 60); do "${HES[@]}" status 2>/dev/null | grep -q "3/3 up" && break; sleep 1; done
"${HES[@]}" volume create v --size 1GiB --replicas 3 >/dev/null
"${HES[@]}" export v --nbd "unix:$D/v1.sock" >/dev/null
fio --name=w --ioengine=nbd --uri="nbd+unix:///v?socket=$D/v1.sock" --size=64m --rw=randwrite \
  --bs=4k --iodepth=4 --time_based --runtime=3 >/dev/null 2>&1
"${HES[@]}" status | grep -E "^leader"
kill -9 "$(pgrep -f "$D/node-1/config.json" | head -1)"
t0=$(date +%s%N)
HES_CONFIG=$D/node-2/config.json "${HES[@]}" export v --takeover --nbd "unix:$D/v2.sock" >/dev/null
t1=$(date +%s%N)
fio --name=p --ioengine=nbd --uri="nbd+unix:///v?socket=$D/v2.sock" --size=4k --rw=write \
  --bs=4k >/dev/null 2>&1
t2=$(date +%s%N)
echo "kill -9 of node 1 -> takeover export on node 2: $(((t1 - t0) / 1000000)) ms;" \
  "first acknowledged write: $(((t2 - t0) / 1000000)) ms"
grep -h '"volume open:\|"chunk sealed' "$D/node-2.log" | cut -c1-400 || true
