/**
 * Human and JSON renderings of status and volumes. JSON keeps the protobuf field names
 * (camelCase), in protobuf JSON form (64-bit integers as decimal strings).
 */
import { toJson } from "@bufbuild/protobuf";
import {
  type ClusterStatus,
  ClusterStatusSchema,
  NodeState,
  type PlacementSummary,
  type SnapshotInfo,
  SnapshotInfoSchema,
  type VolumeInfo,
  VolumeInfoSchema,
} from "@hes/proto";
import type { CliIo } from "./main.js";
import { formatSize } from "./units.js";

const BAR_WIDTH = 24;

/** A text progress bar: [#########---------]  45% 1.2 GiB / 2.6 GiB. */
export function progressBar(done: number, total: number): string {
  const fraction = total <= 0 ? 1 : Math.min(1, done / total);
  const filled = Math.round(fraction * BAR_WIDTH);
  const percent = String(Math.floor(fraction * 100)).padStart(3);
  const bar = `${"#".repeat(filled)}${"-".repeat(BAR_WIDTH - filled)}`;
  return `[${bar}] ${percent}% ${formatSize(done)} / ${formatSize(total)}`;
}

const stateName = (state: NodeState): string =>
  ({
    [NodeState.UNSPECIFIED]: "unknown",
    [NodeState.UP]: "up",
    [NodeState.DOWN]: "DOWN",
    [NodeState.DRAINING]: "draining",
    [NodeState.REMOVED]: "removed",
  })[state] ?? "unknown";

export function printStatus(io: CliIo, status: ClusterStatus | undefined, json: boolean): void {
  if (status === undefined) {
    io.out(json ? "{}\n" : "no status returned\n");
    return;
  }
  if (json) {
    io.out(`${JSON.stringify(toJson(ClusterStatusSchema, status))}\n`);
    return;
  }
  const leader = status.leaderId === 0 ? "none (no quorum?)" : `node ${status.leaderId}`;
  io.out(`cluster ${status.clusterId}\n`);
  io.out(`leader ${leader}  term ${status.term}  commit ${status.commitIndex}\n`);
  io.out(`members ${status.members.map((m) => m.nodeId).join(", ") || "-"}\n`);
  const up = status.nodes.filter((n) => n.state === NodeState.UP).length;
  io.out(`nodes ${up}/${status.nodes.length} up\n`);
  for (const n of status.nodes) {
    const health = n.replicasNotInSync > 0n ? `${n.replicasNotInSync} replicas not in sync` : "";
    io.out(`  node ${n.nodeId}  ${stateName(n.state).padEnd(8)} ${n.failureDomain}  ${health}\n`);
  }
  const placement = status.placement;
  io.out(`volumes ${status.volumes.length}\n`);
  for (const v of status.volumes) io.out(`  ${volumeLine(v)}\n`);
  if (placement !== undefined) {
    io.out(`replicas ${replicaHealth(placement)}: ${placement.chunksPlaced} chunks placed\n`);
  }
}

/** "in sync", "degraded (N chunks)" or "rebuilding [bar]" from a placement summary. */
export function replicaHealth(p: PlacementSummary | undefined): string {
  if (p === undefined) return "in sync";
  const filling = Number(p.replicasFilling);
  if (filling > 0) {
    const bar = progressBar(Number(p.fillBytesDone), Number(p.fillBytesTotal));
    return `rebuilding ${bar} (${filling} replicas)`;
  }
  const degraded = Number(p.chunksDegraded);
  return degraded > 0 ? `degraded (${degraded} of ${p.chunksPlaced} chunks)` : "in sync";
}

function volumeLine(v: VolumeInfo): string {
  const owner = v.ownerNodeId === 0 ? "not open" : `open on node ${v.ownerNodeId}`;
  const size = formatSize(Number(v.sizeBytes));
  const health = replicaHealth(v.health);
  return `${v.name.padEnd(20)} ${size.padStart(10)}  ×${v.replicas}  ${owner.padEnd(16)} ${health}`;
}

export function printVolume(io: CliIo, volume: VolumeInfo | undefined, json: boolean): void {
  if (volume === undefined) return;
  if (json) {
    io.out(`${JSON.stringify(toJson(VolumeInfoSchema, volume))}\n`);
    return;
  }
  io.out(`${volumeLine(volume)}\n`);
  io.out(`  id ${volume.volumeId}  chunk ${formatSize(Number(volume.chunkSizeBytes))}  `);
  io.out(`quorum ${volume.writeQuorum}  epoch ${volume.epoch}  chunks ${volume.chunksPlaced}\n`);
}

export function printVolumes(io: CliIo, volumes: readonly VolumeInfo[], json: boolean): void {
  if (json) {
    io.out(`${JSON.stringify(volumes.map((v) => toJson(VolumeInfoSchema, v)))}\n`);
    return;
  }
  if (volumes.length === 0)
    io.out("no volumes (create one: hes volume create NAME --size 10GiB)\n");
  for (const v of volumes) io.out(`${volumeLine(v)}\n`);
}

export function printSnapshots(io: CliIo, snapshots: readonly SnapshotInfo[], json: boolean): void {
  if (json) {
    io.out(`${JSON.stringify(snapshots.map((s) => toJson(SnapshotInfoSchema, s)))}\n`);
    return;
  }
  if (snapshots.length === 0) io.out("no snapshots\n");
  for (const s of snapshots) {
    const when = new Date(Number(s.createdAtMs)).toISOString();
    io.out(`${s.name.padEnd(24)} id ${s.snapshotId}  ${when}\n`);
  }
}
