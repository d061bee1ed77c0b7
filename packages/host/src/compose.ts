/**
 * The real components of a host: the Raft-hosted cluster member (with its admin service and
 * loops) on the host's gRPC server, the chunk-replica service over the host's store, a replica
 * pool (local calls for this node, mutual-TLS framing to the others), the mover and the
 * scrubber, and volumes from blockdev's VolumeManager over the pool. Host.start uses these unless told otherwise.
 */
import * as grpc from "@grpc/grpc-js";
import type { NodeId } from "@hes/base";
import { VolumeManager } from "@hes/blockdev";
import {
  ChunkReplicaService,
  ClusterMember,
  clusterStatus,
  Mover,
  ReplicaPool,
  Scrubber,
} from "@hes/replication";
import { formatHostPort } from "./config.js";
import type { HostComponents, HostContext, HostMember } from "./host.js";
import { dataPlaneClientTls, grpcServerCredentials } from "./tls.js";

/** Raft timing for hosts on one network: 100 ms ticks, elections after 1–2 s of silence. */
const RAFT_TICK_MS = 100;
const RAFT_ELECTION_TICKS = 10;

function diskId(nodeId: NodeId, index: number): string {
  return `n${nodeId}-d${index}`;
}

async function startClusterMember(
  context: HostContext,
): Promise<{ member: ClusterMember; pool: ReplicaPool }> {
  const { config, store, logger } = context;
  const disks = store.stats().disks;
  const member = await ClusterMember.start({
    nodeId: config.nodeId,
    clusterId: config.clusterId,
    dataDir: config.dataDir,
    members: config.peers.map((peer) => ({
      nodeId: peer.nodeId,
      controlAddress: formatHostPort(peer.control),
    })),
    self: {
      controlAddress: formatHostPort(config.listen.control),
      dataAddress: formatHostPort(config.listen.data),
      failureDomain: config.failureDomain,
      disks: disks.map((disk, i) => ({
        diskId: diskId(config.nodeId, i),
        path: disk.name,
        capacityBytes: disk.capacityBytes,
      })),
    },
    credentials: {
      server:
        context.tls === undefined
          ? grpc.ServerCredentials.createInsecure()
          : grpcServerCredentials(context.tls),
      channel: context.grpcCredentials,
    },
    server: context.grpcServer,
    logger: logger.child({ component: "member" }),
    raft: { tickMs: RAFT_TICK_MS, electionTicks: RAFT_ELECTION_TICKS },
    loops: {
      diskUsage: () =>
        store.stats().disks.map((disk, i) => ({
          diskId: diskId(config.nodeId, i),
          usedBytes: disk.usedBytes,
          failed: disk.failed,
        })),
    },
  });
  const pool = new ReplicaPool({
    nodeId: config.nodeId,
    store,
    view: () => member.view(),
    ...(context.tls === undefined ? {} : { tls: dataPlaneClientTls(context.tls) }),
    logger: logger.child({ component: "replica-pool" }),
  });
  return { member, pool };
}

/** Member, replica service and volumes, all real. One set per Host. */
export function clusterComponents(): HostComponents {
  let manager: VolumeManager | undefined;
  return {
    startMember: async (context): Promise<HostMember> => {
      const { member, pool } = await startClusterMember(context);
      const background = { nodeId: context.config.nodeId, control: member, replicas: pool };
      // The mover rebuilds and catches up the replicas the map assigns to this node; the
      // scrubber compares block checksums across in-sync replicas and repairs from a good one.
      const mover = new Mover({
        ...background,
        logger: context.logger.child({ component: "mover" }),
      });
      const scrubber = new Scrubber({
        ...background,
        logger: context.logger.child({ component: "scrubber" }),
      });
      mover.start();
      scrubber.start();
      manager = new VolumeManager({
        control: member,
        directory: pool,
        logger: context.logger.child({ component: "volumes" }),
      });
      return {
        control: member,
        gauges: () => {
          const status = member.status();
          const placement = clusterStatus(member.view()).placement;
          return {
            term: status.term,
            commitIndex: status.commitIndex,
            leaderId: status.leaderId,
            rebuildBytesDone: Number(placement?.fillBytesDone ?? 0n),
            rebuildBytesTotal: Number(placement?.fillBytesTotal ?? 0n),
            replicasFilling: Number(placement?.replicasFilling ?? 0n),
          };
        },
        stop: async () => {
          await mover.close();
          await scrubber.close();
          await pool.close();
          await member.stop();
        },
      };
    },
    replicaHandler: (context) => {
      const service = new ChunkReplicaService({
        nodeId: context.config.nodeId,
        store: context.store,
        logger: context.logger.child({ component: "replica-service" }),
      });
      return (request) => service.handle(request);
    },
    openVolume: async (_context, _member, name, options) => {
      if (manager === undefined) throw new TypeError("volumes need the cluster member");
      const volume = await manager.open({ name, takeover: options.takeover });
      return {
        device: volume,
        close: () => volume.close(),
        createSnapshot: async (snapshotName) => {
          await volume.snapshots.create({ name: snapshotName });
        },
      };
    },
    snapshotVolume: async (_context, _member, name, snapshotName) => {
      if (manager === undefined) throw new TypeError("volumes need the cluster member");
      const volume = await manager.open({ name, takeover: false });
      try {
        await volume.snapshots.create({ name: snapshotName });
      } finally {
        await volume.close();
      }
    },
    rollbackVolume: async (_context, _member, name, snapshotName) => {
      if (manager === undefined) throw new TypeError("volumes need the cluster member");
      const volume = await manager.open({ name, takeover: false });
      try {
        await volume.snapshots.rollback({ name: snapshotName });
      } finally {
        await volume.close();
      }
    },
  };
}
