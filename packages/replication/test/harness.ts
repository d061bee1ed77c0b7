/**
 * Test harness: a ClusterMap fed commands the way a Raft driver would (increasing indexes,
 * leader-stamped times), with helpers to expect success or a specific rejection.
 */
import assert from "node:assert/strict";
import type { HesErrorCode } from "@hes/base";
import {
  type ApplyResult,
  type ApplyValue,
  ClusterMap,
  type CommandFields,
  type CommandKind,
  encodeCommand,
} from "@hes/replication";

export const GiB = 1024 ** 3;
export const TiB = 1024 ** 4;
export const MiB = 1024 ** 2;

/** Options for one applied command. */
export interface RunOptions {
  /** Leader stamp; default: the harness clock. */
  readonly timeMs?: number;
  readonly version?: number;
}

export class Harness {
  readonly map: ClusterMap;
  index = 0;
  term = 1;
  /** The "leader clock" stamped on commands; tests advance it explicitly. */
  nowMs = 1_700_000_000_000;

  constructor(map = new ClusterMap()) {
    this.map = map;
    this.index = map.appliedIndex;
  }

  /** Applies raw entry data at the next index. */
  applyBytes(data: Uint8Array): ApplyResult {
    this.index++;
    return this.map.apply(data, { index: this.index, term: this.term });
  }

  run<K extends CommandKind>(kind: K, fields: CommandFields<K>, options: RunOptions = {}) {
    const data = encodeCommand(kind, fields, {
      timeMs: options.timeMs ?? this.nowMs,
      ...(options.version === undefined ? {} : { version: options.version }),
    });
    return this.applyBytes(data);
  }

  /** Applies and expects success; returns the payload. */
  ok<K extends CommandKind>(kind: K, fields: CommandFields<K>, options?: RunOptions): ApplyValue {
    const result = this.run(kind, fields, options);
    if (!result.ok) assert.fail(`${kind} rejected: ${result.error.message}`);
    return result.value;
  }

  /**
   * Applies and expects a rejection with `code`, and checks that the map's content (all but
   * applied index, term and time) did not change.
   */
  rejects<K extends CommandKind>(
    code: HesErrorCode,
    kind: K,
    fields: CommandFields<K>,
    options?: RunOptions,
  ): string {
    const before = contentOf(this.map);
    const result = this.run(kind, fields, options);
    if (result.ok) assert.fail(`${kind} was accepted, expected ${code}`);
    assert.equal(result.error.code, code, result.error.message);
    assert.deepEqual(contentOf(this.map), before, `${kind} rejection changed the map`);
    return result.error.message;
  }

  init(gracePeriodMs = 30_000): void {
    this.ok("initCluster", { clusterId: "test-cluster", gracePeriodMs });
  }

  addNode(nodeId: number, failureDomain: string, capacityBytes = 4 * TiB): void {
    this.ok("addNode", {
      nodeId,
      controlAddress: `10.0.0.${nodeId}:7100`,
      dataAddress: `10.0.0.${nodeId}:7200`,
      failureDomain,
      disks: [{ diskId: `disk-${nodeId}`, path: "/dev/sdb", capacityBytes }],
    });
  }

  createVolume(name: string, sizeBytes = 10 * GiB, extra: CommandFields<"createVolume"> = {}) {
    const { volumeId } = this.ok("createVolume", { name, sizeBytes, ...extra });
    assert.ok(volumeId !== undefined);
    return volumeId;
  }

  open(volumeId: number, nodeId: number, takeover = false): number {
    const { epoch } = this.ok("openVolume", { volumeId, nodeId, takeover });
    assert.ok(epoch !== undefined);
    return epoch;
  }

  place(volumeId: number, chunkIndex: number, preferredNodeId = 0) {
    const epoch = this.map.volume(volumeId)?.epoch ?? 0;
    const { chunk } = this.ok("placeChunk", { volumeId, chunkIndex, epoch, preferredNodeId });
    assert.ok(chunk !== undefined);
    return chunk;
  }

  assertSound(): void {
    assert.deepEqual(this.map.checkInvariants(), []);
  }
}

/** The map's snapshot with applied index, term and time zeroed: its content only. */
export function contentOf(map: ClusterMap): Uint8Array {
  const copy = ClusterMap.fromSnapshot(map.snapshot());
  return stripClock(copy.snapshot());
}

import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ClusterMapStateSchema } from "@hes/proto";

function stripClock(bytes: Uint8Array): Uint8Array {
  const state = fromBinary(ClusterMapStateSchema, bytes);
  state.appliedIndex = 0n;
  state.appliedTerm = 0n;
  state.timeMs = 0n;
  return toBinary(ClusterMapStateSchema, state);
}

/** A cluster of `domains` × `perDomain` nodes, ids from 1, domains "d0".."dN". */
export function clusterWith(domains: number, perDomain: number, capacityBytes = 4 * TiB) {
  const h = new Harness();
  h.init();
  let id = 1;
  for (let d = 0; d < domains; d++) {
    for (let n = 0; n < perDomain; n++) h.addNode(id++, `d${d}`, capacityBytes);
  }
  return h;
}
