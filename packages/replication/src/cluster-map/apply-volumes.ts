/**
 * Commands about volumes: create, delete, resize, open (lease), close, snapshots, clones.
 * Each handler checks everything first, then changes the state.
 */
import type {
  CloneVolumeCommand,
  CloseVolumeCommand,
  CreateSnapshotCommand,
  CreateVolumeCommand,
  DeleteSnapshotCommand,
  DeleteVolumeCommand,
  DetachCloneCommand,
  OpenVolumeCommand,
  ResizeVolumeCommand,
} from "@hes/proto";
import {
  CHUNK_SIZE_BYTES_DEFAULT,
  CHUNK_SIZE_BYTES_MAX,
  CHUNK_SIZE_BYTES_MIN,
  CHUNKS_PER_VOLUME_MAX,
  CLONE_DEPTH_MAX,
  REPLICATION_FACTOR_DEFAULT,
  REPLICATION_FACTOR_MAX,
  SNAPSHOTS_PER_VOLUME_MAX,
  VOLUME_BLOCK_BYTES,
  VOLUME_ID_MAX,
  VOLUME_SIZE_BYTES_MAX,
  VOLUMES_MAX,
} from "../limits.js";
import { isPowerOfTwo, nameArg, nodeIdArg, reject, u64 } from "./arguments.js";
import { chunkCount, isAlive, type VolumeRecord } from "./model.js";
import { changed, type HandlerContext, type Outcome, UNCHANGED } from "./outcome.js";
import type { MapState } from "./state.js";

/** The volume, or HES_NOT_FOUND. */
export function volumeArg(state: MapState, volumeId: bigint): VolumeRecord {
  const id = u64(volumeId, "volume_id", { min: 1, max: VOLUME_ID_MAX });
  const volume = state.volume(id);
  if (volume === undefined) reject("HES_NOT_FOUND", `volume ${id} does not exist`);
  return volume;
}

function sizeArg(value: bigint, chunkSizeBytes: number): number {
  const sizeBytes = u64(value, "size_bytes", {
    min: VOLUME_BLOCK_BYTES,
    max: VOLUME_SIZE_BYTES_MAX,
  });
  if (sizeBytes % VOLUME_BLOCK_BYTES !== 0) {
    reject("HES_INVALID_ARGUMENT", `size_bytes ${sizeBytes} is not a multiple of 4096`);
  }
  if (Math.ceil(sizeBytes / chunkSizeBytes) > CHUNKS_PER_VOLUME_MAX) {
    reject(
      "HES_INVALID_ARGUMENT",
      `size_bytes ${sizeBytes} is more than CHUNKS_PER_VOLUME_MAX chunks of ${chunkSizeBytes}`,
    );
  }
  return sizeBytes;
}

function checkRoomForVolume(state: MapState, name: string): void {
  if (state.volumeByName(name) !== undefined) {
    reject("HES_ALREADY_EXISTS", `volume ${name} already exists`);
  }
  if (state.volumeCount >= VOLUMES_MAX) {
    reject("HES_BUSY", `the cluster has VOLUMES_MAX (${VOLUMES_MAX}) volumes`);
  }
  if (state.nextVolumeId > VOLUME_ID_MAX) reject("HES_BUSY", "volume ids are exhausted");
}

export function applyCreateVolume(ctx: HandlerContext, command: CreateVolumeCommand): Outcome {
  const { state } = ctx;
  const name = nameArg(command.name, "name");
  const chunkSizeBytes =
    command.chunkSizeBytes === 0n
      ? CHUNK_SIZE_BYTES_DEFAULT
      : u64(command.chunkSizeBytes, "chunk_size_bytes", {
          min: CHUNK_SIZE_BYTES_MIN,
          max: CHUNK_SIZE_BYTES_MAX,
        });
  if (!isPowerOfTwo(chunkSizeBytes)) {
    reject("HES_INVALID_ARGUMENT", `chunk_size_bytes ${chunkSizeBytes} is not a power of two`);
  }
  const sizeBytes = sizeArg(command.sizeBytes, chunkSizeBytes);
  const replicationFactor =
    command.replicationFactor === 0 ? REPLICATION_FACTOR_DEFAULT : command.replicationFactor;
  if (replicationFactor > REPLICATION_FACTOR_MAX) {
    reject("HES_INVALID_ARGUMENT", `replication_factor must be 1 to ${REPLICATION_FACTOR_MAX}`);
  }
  const writeQuorum =
    command.writeQuorum === 0 ? Math.floor(replicationFactor / 2) + 1 : command.writeQuorum;
  if (writeQuorum > replicationFactor) {
    reject("HES_INVALID_ARGUMENT", `write_quorum ${writeQuorum} exceeds the replication factor`);
  }
  checkRoomForVolume(state, name);
  const volumeId = state.nextVolumeId++;
  state.putVolume({
    volumeId,
    name,
    sizeBytes,
    chunkSizeBytes,
    replicationFactor,
    writeQuorum,
    ownerNodeId: 0,
    epoch: 0,
    parentVolumeId: 0,
    parentSnapshotId: 0,
    snapshots: [],
    createdAtIndex: ctx.index,
  });
  return changed({ volumeId });
}

function clonesOf(state: MapState, volumeId: number, snapshotId?: number): VolumeRecord[] {
  return state
    .volumes()
    .filter(
      (v) =>
        v.parentVolumeId === volumeId &&
        (snapshotId === undefined || v.parentSnapshotId === snapshotId),
    );
}

export function applyDeleteVolume(ctx: HandlerContext, command: DeleteVolumeCommand): Outcome {
  const { state } = ctx;
  const volume = volumeArg(state, command.volumeId);
  if (volume.ownerNodeId !== 0) {
    reject("HES_LEASE_HELD", `volume ${volume.name} is open on node ${volume.ownerNodeId}`, {
      ownerNodeId: volume.ownerNodeId,
    });
  }
  const clones = clonesOf(state, volume.volumeId);
  if (clones.length > 0) {
    reject(
      "HES_INVALID_ARGUMENT",
      `volume ${volume.name} has linked clones (${clones.map((c) => c.name).join(", ")})`,
    );
  }
  state.deleteVolume(volume.volumeId);
  return changed();
}

export function applyResizeVolume(ctx: HandlerContext, command: ResizeVolumeCommand): Outcome {
  const { state } = ctx;
  const volume = volumeArg(state, command.volumeId);
  const sizeBytes = sizeArg(command.sizeBytes, volume.chunkSizeBytes);
  if (sizeBytes === volume.sizeBytes) return UNCHANGED;
  const next = { ...volume, sizeBytes };
  if (sizeBytes < volume.sizeBytes) {
    if (!command.allowShrink) {
      reject("HES_INVALID_ARGUMENT", `shrinking ${volume.name} loses data: set allow_shrink`);
    }
    if (volume.snapshots.length > 0) {
      reject("HES_INVALID_ARGUMENT", `volume ${volume.name} has snapshots: cannot shrink it`);
    }
    if (volume.ownerNodeId !== 0) {
      reject("HES_LEASE_HELD", `volume ${volume.name} is open: close it before shrinking`);
    }
    const chunks = chunkCount(next);
    for (const chunk of state.chunksOfVolume(volume.volumeId)) {
      if (chunk.chunkIndex >= chunks) state.deleteChunk(chunk);
    }
  }
  state.putVolume(next);
  return changed();
}

export function applyOpenVolume(ctx: HandlerContext, command: OpenVolumeCommand): Outcome {
  const { state } = ctx;
  const volume = volumeArg(state, command.volumeId);
  const nodeId = nodeIdArg(command.nodeId, "node_id");
  const node = state.node(nodeId);
  if (node === undefined) reject("HES_NOT_FOUND", `node ${nodeId} is not in the cluster`);
  if (!isAlive(node)) reject("HES_UNAVAILABLE", `node ${nodeId} is ${node.state}`);
  const owner = volume.ownerNodeId;
  if (owner !== 0 && owner !== nodeId && !command.takeover) {
    reject(
      "HES_LEASE_HELD",
      `volume ${volume.name} is open on node ${owner} at epoch ${volume.epoch}`,
      { ownerNodeId: owner, epoch: volume.epoch },
    );
  }
  // Every grant raises the epoch, also a re-open by the same node (a restarted host agent):
  // whatever an earlier incarnation still has in flight is fenced.
  const epoch = volume.epoch + 1;
  state.putVolume({ ...volume, ownerNodeId: nodeId, epoch });
  return changed({ epoch });
}

export function applyCloseVolume(ctx: HandlerContext, command: CloseVolumeCommand): Outcome {
  const { state } = ctx;
  const volume = volumeArg(state, command.volumeId);
  const nodeId = nodeIdArg(command.nodeId, "node_id");
  const epoch = u64(command.epoch, "epoch");
  if (epoch !== volume.epoch) {
    reject("HES_FENCED", `volume ${volume.name}: epoch ${epoch} superseded by ${volume.epoch}`, {
      current: volume.epoch,
    });
  }
  if (volume.ownerNodeId === 0) return UNCHANGED;
  if (volume.ownerNodeId !== nodeId) {
    reject("HES_FENCED", `volume ${volume.name} is owned by node ${volume.ownerNodeId}`, {
      current: volume.epoch,
    });
  }
  state.putVolume({ ...volume, ownerNodeId: 0 });
  return changed();
}

export function applyCreateSnapshot(ctx: HandlerContext, command: CreateSnapshotCommand): Outcome {
  const { state } = ctx;
  const volume = volumeArg(state, command.volumeId);
  const name = nameArg(command.name, "name");
  if (volume.snapshots.some((s) => s.name === name)) {
    reject("HES_ALREADY_EXISTS", `volume ${volume.name} already has a snapshot ${name}`);
  }
  if (volume.snapshots.length >= SNAPSHOTS_PER_VOLUME_MAX) {
    reject("HES_BUSY", `volume ${volume.name} has SNAPSHOTS_PER_VOLUME_MAX snapshots`);
  }
  const snapshotId = state.nextSnapshotId++;
  const snapshot = { snapshotId, name, createdAtIndex: ctx.index, createdAtMs: ctx.timeMs };
  state.putVolume({ ...volume, snapshots: [...volume.snapshots, snapshot] });
  return changed({ snapshotId });
}

function snapshotArg(volume: VolumeRecord, snapshotId: bigint): number {
  const id = u64(snapshotId, "snapshot_id", { min: 1 });
  if (!volume.snapshots.some((s) => s.snapshotId === id)) {
    reject("HES_NOT_FOUND", `volume ${volume.name} has no snapshot ${id}`);
  }
  return id;
}

export function applyDeleteSnapshot(ctx: HandlerContext, command: DeleteSnapshotCommand): Outcome {
  const { state } = ctx;
  const volume = volumeArg(state, command.volumeId);
  const snapshotId = snapshotArg(volume, command.snapshotId);
  const clones = clonesOf(state, volume.volumeId, snapshotId);
  if (clones.length > 0) {
    reject(
      "HES_INVALID_ARGUMENT",
      `snapshot ${snapshotId} of ${volume.name} has linked clones ` +
        `(${clones.map((c) => c.name).join(", ")})`,
    );
  }
  const snapshots = volume.snapshots.filter((s) => s.snapshotId !== snapshotId);
  state.putVolume({ ...volume, snapshots });
  return changed();
}

function cloneDepth(state: MapState, volume: VolumeRecord): number {
  let depth = 0;
  for (let v: VolumeRecord | undefined = volume; v?.parentVolumeId; depth++) {
    v = state.volume(v.parentVolumeId);
  }
  return depth;
}

export function applyCloneVolume(ctx: HandlerContext, command: CloneVolumeCommand): Outcome {
  const { state } = ctx;
  const source = volumeArg(state, command.sourceVolumeId);
  const snapshotId = snapshotArg(source, command.snapshotId);
  const name = nameArg(command.name, "name");
  if (cloneDepth(state, source) + 1 > CLONE_DEPTH_MAX) {
    reject("HES_INVALID_ARGUMENT", `clone of ${source.name} would exceed CLONE_DEPTH_MAX`);
  }
  checkRoomForVolume(state, name);
  const volumeId = state.nextVolumeId++;
  state.putVolume({
    ...source,
    volumeId,
    name,
    ownerNodeId: 0,
    epoch: 0,
    parentVolumeId: source.volumeId,
    parentSnapshotId: snapshotId,
    snapshots: [],
    createdAtIndex: ctx.index,
  });
  return changed({ volumeId });
}

/**
 * Detaches a flattened clone from its parent snapshot. The map cannot see whether every block
 * was copied; the owner's lease (node and current epoch) vouches for it, as for its writes.
 */
export function applyDetachClone(ctx: HandlerContext, command: DetachCloneCommand): Outcome {
  const { state } = ctx;
  const volume = volumeArg(state, command.volumeId);
  const nodeId = nodeIdArg(command.nodeId, "node_id");
  const epoch = u64(command.epoch, "epoch");
  if (epoch !== volume.epoch || volume.ownerNodeId !== nodeId) {
    reject(
      "HES_FENCED",
      `volume ${volume.name}: node ${nodeId} at epoch ${epoch} is not its owner ` +
        `(node ${volume.ownerNodeId}, epoch ${volume.epoch})`,
      { current: volume.epoch },
    );
  }
  if (volume.parentVolumeId === 0) return UNCHANGED;
  state.putVolume({ ...volume, parentVolumeId: 0, parentSnapshotId: 0 });
  return changed();
}
