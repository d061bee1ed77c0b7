/**
 * Goal: the cluster map is a deterministic state machine whose invariants hold whatever the
 * log says. Method (fast-check, seeded): random command sequences over a small universe of
 * nodes, volumes and chunks, with random time stamps (including an old leader's earlier
 * clock), garbage entries, and the leader's own planners (repair, rebalance, liveness)
 * proposing what they would. Every entry is applied to two independent maps, and, from a
 * random point on, to a third restored from a snapshot of the first. After every entry:
 *  - all maps give the same outcome and encode to identical snapshots;
 *  - the invariants hold (replicas on distinct nodes and domains, an in-sync replica per
 *    chunk, lease owners are live nodes, indexes in step, bounds respected);
 *  - epochs never decrease and ids are never reused;
 *  - a rejected entry changed nothing;
 *  - a command a planner proposes is accepted (the planners check what the map checks).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type ApplyResult,
  ClusterMap,
  type CommandFields,
  type CommandKind,
  encodeCommand,
  nodesToMarkDown,
  planRebalance,
  planRepairs,
} from "@hes/replication";
import fc from "fast-check";
import { contentOf, MiB } from "./harness.ts";

interface Step {
  readonly op: number;
  readonly a: number;
  readonly b: number;
  readonly c: number;
  readonly d: number;
  readonly flag: boolean;
  readonly dtMs: number;
}

type Proposal = { kind: CommandKind; fields: object; planned?: boolean } | { garbage: Uint8Array };

const NODES = 6;
const VOLUMES = 6;

function pickId<T>(items: readonly T[], pick: number): T {
  return items[pick % items.length] as T;
}

function replicaNode(map: ClusterMap, volumeId: number, chunkIndex: number, pick: number) {
  const replicas = map.chunk(volumeId, chunkIndex)?.replicas ?? [];
  return replicas.length === 0
    ? 1 + (pick % NODES)
    : (replicas[pick % replicas.length]?.nodeId ?? 1);
}

function epochOf(map: ClusterMap, volumeId: number, s: Step): number {
  const current = map.volume(volumeId)?.epoch ?? 0;
  return s.flag || s.d % 4 !== 0 ? current : s.d % 3;
}

/** Turns a random step into the command a member would propose, reading the map it sees. */
function propose(map: ClusterMap, s: Step, nowMs: number): Proposal {
  // Mostly ids that exist (so commands get past lookups), sometimes any id.
  const nodes = map.nodes().filter((n) => n.state !== "removed");
  const anyId = s.d % 10 === 0;
  const node = anyId || nodes.length === 0 ? 1 + (s.a % NODES) : pickId(nodes, s.a).nodeId;
  const all = map.volumes();
  const open = all.filter((v) => v.ownerNodeId !== 0);
  // Chunk commands mostly target open volumes: only those get chunks placed.
  const volumes = s.op >= 13 && s.op <= 19 && open.length > 0 && s.c % 4 !== 0 ? open : all;
  const volumeId =
    anyId || volumes.length === 0 ? 1 + (s.a % VOLUMES) : pickId(volumes, s.b).volumeId;
  const placed = map.chunksOfVolume(volumeId);
  const chunkIndex =
    s.c % 3 === 0 || placed.length === 0 ? s.b % 8 : pickId(placed, s.c).chunkIndex;
  const owner = map.volume(volumeId)?.ownerNodeId ?? node;
  const snapshots = map.volume(volumeId)?.snapshots ?? [];
  const snapshotId =
    anyId || snapshots.length === 0 ? 1 + (s.b % 4) : pickId(snapshots, s.b).snapshotId;
  const otherNode = nodes.length === 0 ? 1 + (s.d % NODES) : pickId(nodes, s.d).nodeId;
  const seqs = map.chunk(volumeId, chunkIndex)?.replicas.map((r) => r.durableSeq) ?? [0];
  const c = (kind: CommandKind, fields: object): Proposal => ({ kind, fields });
  switch (s.op) {
    case 0:
      return c("addNode", {
        nodeId: 1 + (s.a % NODES),
        controlAddress: `h${node}:1`,
        dataAddress: `h${node}:2`,
        failureDomain: `d${s.b % 3}`,
        disks: [{ diskId: "x", path: "/x", capacityBytes: (1 + (s.c % 6)) * 128 * MiB }],
      });
    case 1:
      return c("nodeHeartbeat", {
        nodeId: node,
        disks: s.flag
          ? [{ diskId: "x", usedBytes: (s.c % 4) * 64 * MiB, failed: s.d % 9 === 0 }]
          : [],
      });
    case 2:
      return c("markNodeDown", { nodeId: node });
    case 3:
      return c("drainNode", { nodeId: node, cancel: s.flag });
    case 4:
      return c("removeNode", { nodeId: node });
    case 5:
      return c("createVolume", {
        name: s.d % 11 === 0 ? "bad name" : `v${s.a % 5}`,
        sizeBytes: (1 + (s.b % 8)) * 32 * MiB,
        chunkSizeBytes: s.flag ? 16 * MiB : 64 * MiB,
        replicationFactor: 1 + (s.c % 3),
      });
    case 6:
      return c("deleteVolume", { volumeId });
    case 7:
      return c("resizeVolume", {
        volumeId,
        sizeBytes: (1 + (s.b % 8)) * 32 * MiB,
        allowShrink: s.flag,
      });
    case 8:
      return c("openVolume", { volumeId, nodeId: node, takeover: s.flag });
    case 9:
      return c("closeVolume", {
        volumeId,
        nodeId: s.flag ? owner : node,
        epoch: epochOf(map, volumeId, s),
      });
    case 10:
      return c("createSnapshot", { volumeId, name: `s${s.b % 2}` });
    case 11:
      return c("deleteSnapshot", { volumeId, snapshotId });
    case 12:
      if (s.d % 3 === 0) {
        const nodeId = s.flag ? owner : node;
        return c("detachClone", { volumeId, nodeId, epoch: epochOf(map, volumeId, s) });
      }
      return c("cloneVolume", { sourceVolumeId: volumeId, snapshotId, name: `c${s.c % 3}` });
    case 13:
      return c("placeChunk", {
        volumeId,
        chunkIndex,
        epoch: epochOf(map, volumeId, s),
        preferredNodeId: s.c % 2 === 0 ? owner : 0,
      });
    case 14:
      return c("reportReplicaFailure", {
        volumeId,
        chunkIndex,
        epoch: epochOf(map, volumeId, s),
        nodeId: replicaNode(map, volumeId, chunkIndex, s.c),
      });
    case 15:
      return c("reportReplicaCaughtUp", {
        volumeId,
        chunkIndex,
        epoch: epochOf(map, volumeId, s),
        // Mostly a replica that is behind (a move's target, a rebuild, a stale copy).
        nodeId:
          map.chunk(volumeId, chunkIndex)?.replicas.find((r) => r.state !== "in-sync" && s.c % 4)
            ?.nodeId ?? replicaNode(map, volumeId, chunkIndex, s.c),
        durableSeq: s.flag ? Math.max(...seqs) : s.d % 50,
      });
    case 16:
      return c("replaceReplica", {
        volumeId,
        chunkIndex,
        oldNodeId: s.flag ? replicaNode(map, volumeId, chunkIndex, s.c) : 0,
        newNodeId: s.d % 3 === 0 ? otherNode : 0,
      });
    case 17:
      return c("reportReplicaProgress", {
        entries: [
          {
            volumeId,
            chunkIndex,
            nodeId: replicaNode(map, volumeId, chunkIndex, s.c),
            durableSeq: s.d % 60,
            bytesDone: s.flag ? (s.d % 5) * MiB : 0,
            bytesTotal: s.flag ? 4 * MiB : 0,
          },
        ],
      });
    case 18:
      return c("startMove", {
        volumeId,
        chunkIndex,
        fromNodeId: replicaNode(map, volumeId, chunkIndex, s.c),
        toNodeId: otherNode,
      });
    case 19:
      return c(s.flag ? "finishMove" : "cancelMove", { volumeId, chunkIndex });
    case 20:
      return c("setConfig", { gracePeriodMs: s.flag ? 0 : 1_000 + (s.d % 5) * 10_000 });
    case 21:
      return c("updateNode", {
        nodeId: node,
        controlAddress: `h${node}:1`,
        dataAddress: `h${node}:2`,
        failureDomain: `d${s.b % 3}`,
        disks: [{ diskId: "x", path: "/x", capacityBytes: (1 + (s.c % 6)) * 128 * MiB }],
      });
    case 22:
      return { garbage: new Uint8Array([s.a, s.b, s.c, s.d].map((x) => x % 256)) };
    default:
      return planned(map, s, nowMs);
  }
}

/**
 * What the leader's planners would propose now (or a heartbeat when they have nothing).
 * `nowMs` is the leader's clock, the same time it stamps on the proposal.
 */
function planned(map: ClusterMap, s: Step, nowMs: number): Proposal {
  const p = (kind: CommandKind, fields: object): Proposal => ({ kind, fields, planned: true });
  if (s.op === 23) {
    const action = planRepairs(map)[0];
    if (action !== undefined) {
      const { kind, ...fields } = action;
      return p(kind, fields);
    }
  } else if (s.op === 24) {
    const move = planRebalance(map, { movesMax: 1, seed: s.d })[0];
    if (move !== undefined) {
      const { bytes: _, ...fields } = move;
      return p("startMove", fields);
    }
  } else {
    const down = nodesToMarkDown(map, { nowMs, leaderSinceMs: 0 })[0];
    if (down !== undefined)
      return { kind: "markNodeDown", fields: { nodeId: down }, planned: true };
  }
  return { kind: "nodeHeartbeat", fields: { nodeId: 1 + (s.a % NODES) } };
}

const stepFields = {
  op: fc.nat({ max: 25 }),
  a: fc.nat({ max: 1000 }),
  b: fc.nat({ max: 1000 }),
  c: fc.nat({ max: 1000 }),
  d: fc.nat({ max: 1000 }),
  flag: fc.boolean(),
  dtMs: fc.oneof(fc.constant(0), fc.nat({ max: 5_000 }), fc.constant(31_000), fc.constant(-20_000)),
};
const stepArbitrary = fc.record(stepFields);

function summary(result: ApplyResult): string {
  return result.ok ? `ok changed=${result.changed}` : `rejected ${result.error.code}`;
}

function runSequence(steps: readonly Step[], restoreAt: number): void {
  const a = new ClusterMap();
  const b = new ClusterMap();
  let c: ClusterMap | undefined;
  let timeMs = 1_000_000;
  let index = 0;
  const epochs = new Map<number, number>();
  const names = new Map<number, string>();
  const init = encodeCommand("initCluster", { clusterId: "p", gracePeriodMs: 30_000 }, { timeMs });
  for (const m of [a, b]) assert.ok(m.apply(init, { index: 1, term: 1 }).ok);
  index = 1;
  for (const [i, step] of steps.entries()) {
    if (i === restoreAt) c = ClusterMap.fromSnapshot(a.snapshot());
    timeMs = Math.max(1, timeMs + step.dtMs);
    const proposal = propose(a, step, timeMs);
    const data =
      "garbage" in proposal
        ? proposal.garbage
        : encodeCommand(proposal.kind, proposal.fields as CommandFields<CommandKind>, { timeMs });
    index++;
    const before = contentOf(a);
    const context = { index, term: 1 + Math.floor(index / 10) };
    const result = a.apply(data, context);
    assert.equal(summary(b.apply(data, context)), summary(result), `step ${i}`);
    const snapshot = a.snapshot();
    assert.deepEqual(b.snapshot(), snapshot, `maps diverged at step ${i}`);
    if (c !== undefined) {
      assert.equal(summary(c.apply(data, context)), summary(result), `restored, step ${i}`);
      assert.deepEqual(c.snapshot(), snapshot, `restored map diverged at step ${i}`);
    }
    assert.deepEqual(a.checkInvariants(), [], `invariants after step ${i}`);
    if (!result.ok) assert.deepEqual(contentOf(a), before, `rejection changed the map (${i})`);
    if ("planned" in proposal && proposal.planned === true && !result.ok) {
      assert.fail(`planned ${proposal.kind} was rejected: ${result.error.message}`);
    }
    for (const volume of a.volumes()) {
      assert.ok(volume.epoch >= (epochs.get(volume.volumeId) ?? 0), "an epoch went down");
      epochs.set(volume.volumeId, volume.epoch);
      const name = names.get(volume.volumeId);
      assert.ok(name === undefined || name === volume.name, "a volume id was reused");
      names.set(volume.volumeId, volume.name);
    }
  }
}

test("random command sequences: identical maps, invariants, no-op rejections", () => {
  fc.assert(
    fc.property(fc.array(stepArbitrary, { minLength: 1, maxLength: 80 }), fc.nat(), (steps, at) =>
      runSequence(steps, at % steps.length),
    ),
    { numRuns: 300, seed: 0x5eed_0005 },
  );
});

test("a cluster that is mostly built up first reaches deep states", () => {
  // Bias: many nodes, volumes, opens and placements before anything else, so that moves,
  // re-placements and planners act on real placements.
  const setup = fc.array(
    fc.record({
      op: fc.constantFrom(0, 0, 5, 8, 13, 13, 13),
      a: fc.nat({ max: 1000 }),
      b: fc.nat({ max: 1000 }),
      c: fc.nat({ max: 1000 }),
      d: fc.nat({ max: 1000 }),
      flag: fc.constant(true),
      dtMs: fc.constant(0),
    }),
    { minLength: 20, maxLength: 40 },
  );
  // Then mostly chunk traffic: failures, catch-up, re-placement, moves and the planners.
  const chunkStep = fc.record({
    ...stepFields,
    op: fc.oneof(
      { arbitrary: fc.constantFrom(1, 2, 13, 14, 15, 16, 17, 18, 19, 23, 24, 25), weight: 4 },
      { arbitrary: fc.nat({ max: 25 }), weight: 1 },
    ),
  });
  fc.assert(
    fc.property(setup, fc.array(chunkStep, { minLength: 1, maxLength: 80 }), (s1, s2) =>
      runSequence([...s1, ...s2], s1.length),
    ),
    { numRuns: 200, seed: 0x5eed_0006 },
  );
});

test("corrupted entries never crash a member: each is applied or rejected, and sound", () => {
  // Valid commands with random bytes flipped, truncated or appended: whatever decodes must be
  // judged by the rules, the same way on two maps, and never throw.
  const base = new ClusterMap();
  const seedCommands: [CommandKind, object][] = [
    ["initCluster", { clusterId: "f" }],
    [
      "addNode",
      {
        nodeId: 1,
        controlAddress: "a:1",
        dataAddress: "a:2",
        failureDomain: "x",
        disks: [{ diskId: "d", path: "/d", capacityBytes: 1024 * MiB }],
      },
    ],
    [
      "addNode",
      {
        nodeId: 2,
        controlAddress: "b:1",
        dataAddress: "b:2",
        failureDomain: "y",
        disks: [{ diskId: "d", path: "/d", capacityBytes: 1024 * MiB }],
      },
    ],
    ["createVolume", { name: "v", sizeBytes: 256 * MiB, replicationFactor: 2 }],
    ["openVolume", { volumeId: 1, nodeId: 1 }],
    ["placeChunk", { volumeId: 1, chunkIndex: 0, epoch: 1, preferredNodeId: 1 }],
  ];
  let index = 0;
  for (const [kind, fields] of seedCommands) {
    const data = encodeCommand(kind, fields as CommandFields<CommandKind>, { timeMs: 10 });
    assert.ok(base.apply(data, { index: ++index, term: 1 }).ok, kind);
  }
  const templates = [
    ...seedCommands.map(([kind, fields]) =>
      encodeCommand(kind, fields as CommandFields<CommandKind>, { timeMs: 20 }),
    ),
    encodeCommand(
      "reportReplicaProgress",
      {
        entries: [{ volumeId: 1, chunkIndex: 0, nodeId: 2, durableSeq: 5, bytesTotal: 9 }],
      },
      { timeMs: 20 },
    ),
    encodeCommand(
      "startMove",
      { volumeId: 1, chunkIndex: 0, fromNodeId: 1, toNodeId: 2 },
      {
        timeMs: 20,
      },
    ),
  ];
  const corruption = fc.record({
    template: fc.nat({ max: templates.length - 1 }),
    flips: fc.array(fc.record({ at: fc.nat(), value: fc.nat({ max: 255 }) }), { maxLength: 4 }),
    cut: fc.nat(),
    tail: fc.uint8Array({ maxLength: 8 }),
  });
  fc.assert(
    fc.property(fc.array(corruption, { minLength: 1, maxLength: 10 }), (entries) => {
      const a = ClusterMap.fromSnapshot(base.snapshot());
      const b = ClusterMap.fromSnapshot(base.snapshot());
      let at = index;
      for (const entry of entries) {
        const template = templates[entry.template] as Uint8Array;
        const bytes = Uint8Array.from(template);
        for (const flip of entry.flips) bytes[flip.at % bytes.length] = flip.value;
        const data = new Uint8Array([
          ...bytes.subarray(0, 1 + (entry.cut % bytes.length)),
          ...entry.tail,
        ]);
        at++;
        const result = a.apply(data, { index: at, term: 1 });
        assert.equal(summary(b.apply(data, { index: at, term: 1 })), summary(result));
        assert.deepEqual(a.checkInvariants(), []);
      }
      assert.deepEqual(a.snapshot(), b.snapshot());
    }),
    { numRuns: 500, seed: 0x5eed_0007 },
  );
});
