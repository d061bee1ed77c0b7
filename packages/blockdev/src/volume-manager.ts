/**
 * Volume lifecycle through the cluster map: create, open (the owner lease), delete, resize,
 * clone, list, stat. One manager per host agent; it hands out {@link Volume}s.
 */
import { type Clock, HesError, isHesError, type Logger, nullLogger, systemClock } from "@hes/base";
import type { ChunkRecord, ClusterControl, ReplicaDirectory, VolumeRecord } from "@hes/replication";
import {
  VOLUME_BLOCK_BYTES,
  VOLUME_REPLICA_DEADLINE_MS_DEFAULT,
  VOLUME_REPLICA_DEADLINE_MS_MAX,
} from "./limits.js";
import type { QosLimits } from "./token-bucket.js";
import { Volume, type VolumeDeps } from "./volume.js";

/** What a manager needs. */
export interface VolumeManagerOptions {
  readonly control: ClusterControl;
  readonly directory: ReplicaDirectory;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Per-replica deadline of one call; default and maximum 2000 ms. */
  readonly replicaDeadlineMs?: number;
}

/** A volume as listed. */
export interface VolumeInfo extends VolumeRecord {
  /** Chunks placed so far (thin provisioning: the rest hold nothing). */
  readonly placedChunks: number;
}

export interface CreateVolumeOptions {
  readonly name: string;
  /** A multiple of 4096. */
  readonly sizeBytes: number;
  /** A power of two from 1 MiB to 1 GiB; default 64 MiB. */
  readonly chunkSizeBytes?: number;
  /** Default 3. */
  readonly replicationFactor?: number;
  /** Replicas a write must be durable on; default a majority. */
  readonly writeQuorum?: number;
}

export interface OpenVolumeOptions {
  readonly name: string;
  /** Take the lease from the host holding it (live migration): it is fenced. */
  readonly takeover?: boolean;
  readonly qos?: QosLimits;
  /** @internal Seqs per epoch before renewal (tests). */
  readonly seqCounterMax?: number;
}

function optionalCount(value: number | undefined, name: string): number {
  if (value === undefined) return 0;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  return value;
}

function nameArg(name: unknown): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError("name must be a non-empty string");
  }
  return name;
}

/** Creates, opens and administers volumes of one cluster from one node. */
export class VolumeManager {
  private readonly deps: VolumeDeps;

  constructor(options: VolumeManagerOptions) {
    const deadline = options.replicaDeadlineMs ?? VOLUME_REPLICA_DEADLINE_MS_DEFAULT;
    if (!Number.isFinite(deadline) || deadline <= 0 || deadline > VOLUME_REPLICA_DEADLINE_MS_MAX) {
      throw new RangeError(`replicaDeadlineMs must be in (0, ${VOLUME_REPLICA_DEADLINE_MS_MAX}]`);
    }
    this.deps = {
      control: options.control,
      directory: options.directory,
      clock: options.clock ?? systemClock,
      logger: options.logger ?? nullLogger,
      replicaDeadlineMs: deadline,
    };
  }

  private get control(): ClusterControl {
    return this.deps.control;
  }

  private info(record: VolumeRecord): VolumeInfo {
    return { ...record, placedChunks: this.control.view().chunksOfVolume(record.volumeId).length };
  }

  /** The volume by name (after a linearizable sync), or HES_NOT_FOUND. */
  private async record(name: string): Promise<VolumeRecord> {
    const view = await this.control.sync();
    const record = view.volumeByName(nameArg(name));
    if (record === undefined) throw new HesError("HES_NOT_FOUND", `volume ${name} does not exist`);
    return record;
  }

  /** Creates an empty, thin volume (no chunk is placed until written). */
  async create(options: CreateVolumeOptions): Promise<VolumeInfo> {
    const name = nameArg(options.name);
    if (!Number.isSafeInteger(options.sizeBytes) || options.sizeBytes <= 0) {
      throw new RangeError(`sizeBytes must be a positive integer, got ${options.sizeBytes}`);
    }
    if (options.sizeBytes % VOLUME_BLOCK_BYTES !== 0) {
      throw new RangeError(`sizeBytes ${options.sizeBytes} is not a multiple of 4096`);
    }
    const value = await this.control.propose({
      kind: "createVolume",
      fields: {
        name,
        sizeBytes: options.sizeBytes,
        chunkSizeBytes: optionalCount(options.chunkSizeBytes, "chunkSizeBytes"),
        replicationFactor: optionalCount(options.replicationFactor, "replicationFactor"),
        writeQuorum: optionalCount(options.writeQuorum, "writeQuorum"),
      },
    });
    return this.info(this.control.view().volume(value.volumeId as number) as VolumeRecord);
  }

  /**
   * Opens a volume here: takes the owner lease (a new epoch), then seals and reconciles every
   * placed chunk so that a previous owner is fenced before this one serves anything.
   * HES_LEASE_HELD when another node holds it and `takeover` is not set.
   */
  async open(options: OpenVolumeOptions): Promise<Volume> {
    const startMs = this.deps.clock.nowMs();
    const record = await this.record(options.name);
    const value = await this.control.propose({
      kind: "openVolume",
      fields: {
        volumeId: record.volumeId,
        nodeId: this.control.nodeId,
        takeover: options.takeover === true,
      },
    });
    const current = this.control.view().volume(record.volumeId) as VolumeRecord;
    const volume = new Volume(this.deps, {
      record: current,
      epoch: value.epoch as number,
      ...(options.qos === undefined ? {} : { qos: options.qos }),
      ...(options.seqCounterMax === undefined ? {} : { seqCounterMax: options.seqCounterMax }),
    });
    const leaseMs = this.deps.clock.nowMs() - startMs;
    try {
      await volume.prepareAll();
    } catch (error) {
      await volume.close().catch(() => undefined);
      throw error;
    }
    this.deps.logger.debug(
      {
        volume: record.name,
        epoch: value.epoch,
        leaseMs,
        totalMs: this.deps.clock.nowMs() - startMs,
      },
      "volume open: lease taken, every chunk sealed and reconciled",
    );
    return volume;
  }

  /** A linked clone of a snapshot: writable, shares every block it has not written. */
  async clone(options: {
    readonly source: string;
    readonly snapshot: string;
    readonly name: string;
  }): Promise<VolumeInfo> {
    const source = await this.record(options.source);
    const snapshot = source.snapshots.find((s) => s.name === options.snapshot);
    if (snapshot === undefined) {
      throw new HesError("HES_NOT_FOUND", `${source.name} has no snapshot ${options.snapshot}`);
    }
    const value = await this.control.propose({
      kind: "cloneVolume",
      fields: {
        sourceVolumeId: source.volumeId,
        snapshotId: snapshot.snapshotId,
        name: nameArg(options.name),
      },
    });
    return this.info(this.control.view().volume(value.volumeId as number) as VolumeRecord);
  }

  /**
   * Deletes a closed volume: the map first (it refuses open volumes and parents of clones),
   * then its chunks at every replica. A replica that cannot be reached keeps an orphan chunk,
   * logged for the scrubber; the volume is gone either way.
   */
  async delete(options: { readonly name: string }): Promise<void> {
    const record = await this.record(options.name);
    const chunks = [...this.control.view().chunksOfVolume(record.volumeId)];
    await this.control.propose({ kind: "deleteVolume", fields: { volumeId: record.volumeId } });
    await this.deleteChunks(record, chunks);
  }

  private async deleteChunks(record: VolumeRecord, chunks: readonly ChunkRecord[]) {
    for (const chunk of chunks) {
      for (const replica of chunk.replicas) {
        const id = { volumeId: chunk.volumeId, chunkIndex: chunk.chunkIndex };
        try {
          await this.deps.directory
            .replica(replica.nodeId)
            .deleteChunk(id, { epoch: record.epoch });
        } catch (error) {
          this.deps.logger.warn(
            { volume: record.name, chunkIndex: chunk.chunkIndex, nodeId: replica.nodeId },
            `orphan chunk left behind: ${String(error)}`,
          );
        }
      }
    }
  }

  /**
   * Changes the size. Growing works while open (the open Volume sees it). Shrinking loses data,
   * so it needs `allowShrink`, a closed volume and no snapshots; the cut-off tail of the last
   * kept chunk is zeroed first (so a later grow reads zeros there) and chunks past the end are
   * deleted at their replicas.
   */
  async resize(options: {
    readonly name: string;
    readonly sizeBytes: number;
    readonly allowShrink?: boolean;
  }): Promise<VolumeInfo> {
    const record = await this.record(options.name);
    const { sizeBytes } = options;
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % VOLUME_BLOCK_BYTES) {
      throw new RangeError(`sizeBytes must be a positive multiple of 4096, got ${sizeBytes}`);
    }
    if (sizeBytes < record.sizeBytes) {
      if (options.allowShrink !== true) {
        throw new HesError(
          "HES_INVALID_ARGUMENT",
          `shrinking ${record.name} loses data: set allowShrink`,
        );
      }
      await this.prepareShrink(record, sizeBytes);
    }
    await this.control.propose({
      kind: "resizeVolume",
      fields: { volumeId: record.volumeId, sizeBytes, allowShrink: options.allowShrink === true },
    });
    return this.info(this.control.view().volume(record.volumeId) as VolumeRecord);
  }

  private async prepareShrink(record: VolumeRecord, sizeBytes: number): Promise<void> {
    if (record.ownerNodeId !== 0) {
      throw new HesError("HES_LEASE_HELD", `volume ${record.name} is open: close it to shrink`);
    }
    if (record.snapshots.length > 0) {
      throw new HesError("HES_INVALID_ARGUMENT", `volume ${record.name} has snapshots`);
    }
    const volume = await this.open({ name: record.name });
    try {
      const chunkEnd = Math.ceil(sizeBytes / record.chunkSizeBytes) * record.chunkSizeBytes;
      const tailEnd = Math.min(chunkEnd, record.sizeBytes);
      if (tailEnd > sizeBytes) {
        await volume.discard({ offsetBytes: sizeBytes, lengthBytes: tailEnd - sizeBytes });
      }
    } finally {
      await volume.close();
    }
    const keep = Math.ceil(sizeBytes / record.chunkSizeBytes);
    const after = this.control.view().volume(record.volumeId) as VolumeRecord;
    const doomed = this.control
      .view()
      .chunksOfVolume(record.volumeId)
      .filter((c) => c.chunkIndex >= keep);
    await this.deleteChunks(after, doomed);
  }

  /** Every volume, by id. */
  list(): VolumeInfo[] {
    return this.control
      .view()
      .volumes()
      .map((v) => this.info(v));
  }

  /** One volume (after a sync): its record, placed chunks and lease holder. */
  async stat(options: { readonly name: string }): Promise<VolumeInfo> {
    return this.info(await this.record(options.name));
  }
}

/** True for errors that mean "another host owns the volume now". */
export function isLeaseLost(error: unknown): boolean {
  return isHesError(error, "HES_FENCED", "HES_LEASE_HELD");
}
