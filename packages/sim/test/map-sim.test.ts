/**
 * The cluster map hosted on Raft under the simulator: every member is the production
 * `RaftLoop` over `SimRaftStorage`, a drifting `SimClock` and the lossy `SimNetwork`, applying
 * to the runtime's `MapMachine` (the ClusterMap host of ClusterMember). Clients propose real
 * cluster-map commands (stamped by the leader's clock, as ClusterMember does) while members
 * crash (power loss), restart, and the network partitions, drops, duplicates and delays.
 *
 * Checked:
 * - at every applied index, every member's map snapshot bytes are identical (determinism of
 *   apply and of snapshot/restore: a member restored from a raftSnapshot must match too);
 * - after healing, every member applied the same final index, and every acknowledged
 *   proposal is in every map (acknowledged volumes exist with their ids everywhere);
 * - `checkInvariants()` is empty on every map.
 *
 * Seeds are replayable (`HES_MAP_SIM_SEED=N`); a failing seed becomes a regression case below.
 * CI runs a handful; HES_SOAK=1 runs 200.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { type NodeId, nullLogger, Prng } from "@hes/base";
import { INITIAL_HARD_STATE, type Message, makeConfState, RaftLoop } from "@hes/raft";
import {
  type CommandFields,
  type CommandKind,
  encodeCommand,
  type MapApplied,
  MapMachine,
  stampCommand,
} from "@hes/replication";
import {
  CALM_NETWORK,
  type NetworkFaults,
  Scheduler,
  SimClock,
  SimNetwork,
  SimRaftStorage,
} from "@hes/sim";

const TICK_MS = 10;
const ELECTION_TICKS = 10;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** Seeds that once failed (none yet): always run. */
const REGRESSION_SEEDS: readonly number[] = [];

const LOSSY: NetworkFaults = {
  dropRate: 0.1,
  duplicateRate: 0.05,
  delayUsMin: 100,
  delayUsMax: 5_000,
  longDelayRate: 0.02,
  longDelayUsMax: 300_000,
};

class Failure extends Error {}

/** Records a hash of the map after every applied index; all members must agree. */
class CheckedMachine extends MapMachine {
  constructor(
    private readonly memberId: NodeId,
    private readonly hashes: Map<number, { hash: string; by: NodeId }>,
    private readonly failures: string[],
    private readonly dropEvery37th = false,
  ) {
    super(nullLogger);
  }

  override apply(entry: Parameters<MapMachine["apply"]>[0]): MapApplied {
    if (this.dropEvery37th && entry.index % 37 === 0) {
      // Deliberate bug (proves the check bites): this member skips some entries.
      return {
        index: entry.index,
        term: entry.term,
        result: this.map.apply(new Uint8Array(0), entry),
      };
    }
    const applied = super.apply(entry);
    this.record(entry.index);
    return applied;
  }

  override restore(data: Uint8Array, meta: { index: number; term: number }): void {
    super.restore(data, meta);
    this.record(meta.index);
  }

  private record(index: number): void {
    const hash = createHash("sha1").update(this.map.snapshot()).digest("hex");
    const seen = this.hashes.get(index);
    if (seen === undefined) this.hashes.set(index, { hash, by: this.memberId });
    else if (seen.hash !== hash) {
      // Recorded, not thrown: RaftLoop turns a throw from apply into a proposal's failure.
      this.failures.push(
        `map diverged at index ${index}: member ${this.memberId} differs from ${seen.by}`,
      );
    }
  }
}

interface Member {
  readonly id: NodeId;
  readonly clock: SimClock;
  readonly storage: SimRaftStorage;
  loop: RaftLoop<MapApplied> | undefined;
  machine: CheckedMachine;
}

interface Acked {
  readonly kind: CommandKind;
  readonly index: number;
  readonly ok: boolean;
  readonly name?: string;
  readonly volumeId?: number;
}

interface SeedResult {
  acked: number;
  proposals: number;
  restarts: number;
  volumes: number;
  chunks: number;
}

function runSeed(seed: number, unsafe: { dropApplyOn?: NodeId } = {}): SeedResult {
  const prng = new Prng(seed);
  const scheduler = new Scheduler();
  const network = new SimNetwork<Message>(scheduler, prng.fork());
  const hashes = new Map<number, { hash: string; by: NodeId }>();
  const failures: string[] = [];
  const memberCount = prng.int(2) === 0 ? 3 : 5;
  const ids = Array.from({ length: memberCount }, (_, i) => i + 1);
  const snapshotInterval = [5, 20, 10_000][prng.int(3)] ?? 20;
  const members = new Map<NodeId, Member>();
  let restarts = 0;
  const initial = {
    hardState: INITIAL_HARD_STATE,
    snapshot: {
      meta: { index: 0, term: 0, confState: makeConfState(ids, []) },
      data: new Uint8Array(0),
    },
    entries: [],
  };
  const start = (member: Member): void => {
    let state = member.storage.loadSync();
    if (state === undefined) {
      member.storage.bootstrapSync(initial);
      state = initial;
    }
    member.machine = new CheckedMachine(
      member.id,
      hashes,
      failures,
      unsafe.dropApplyOn === member.id,
    );
    network.setUp(member.id, true);
    member.loop = new RaftLoop<MapApplied>({
      raft: {
        id: member.id,
        electionTicks: ELECTION_TICKS,
        heartbeatTicks: 1,
        prng: prng.fork(),
        logger: nullLogger,
      },
      initial: state,
      storage: member.storage,
      transport: network.transport(member.id),
      stateMachine: member.machine,
      clock: member.clock,
      defer: (fn) => {
        scheduler.after(0, fn);
      },
      tickMs: TICK_MS,
      snapshotEntriesInterval: snapshotInterval,
      requestTimeoutTicks: 3 * ELECTION_TICKS,
      logger: nullLogger,
    });
  };
  for (const id of ids) {
    const member: Member = {
      id,
      clock: new SimClock(scheduler, 1 + (prng.float() * 2 - 1) * 0.2),
      storage: new SimRaftStorage(
        id,
        scheduler,
        prng.fork(),
        { minUs: 50, maxUs: 2_000, syncUs: 500 },
        undefined,
      ),
      loop: undefined,
      machine: new CheckedMachine(id, hashes, failures, unsafe.dropApplyOn === id),
    };
    members.set(id, member);
    start(member);
  }
  const crash = (member: Member): void => {
    member.loop?.kill();
    member.loop = undefined;
    member.storage.crash();
    member.clock.reset();
    network.setUp(member.id, false);
  };

  // ---- Clients: real commands, proposed to whichever member believes it leads ----
  const acked: Acked[] = [];
  let proposals = 0;
  let outstanding = 0;
  let volumeSeq = 0;
  const volumes: Array<{ volumeId: number; chunks: number }> = [];
  const open = new Map<number, { nodeId: number; epoch: number }>();
  const hostIds = [11, 12, 13, 14, 15, 16];
  const propose = <K extends CommandKind>(
    kind: K,
    fields: CommandFields<K>,
    onOk?: (applied: MapApplied) => void,
    name?: string,
  ): void => {
    const leader = [...members.values()].find((m) => m.loop?.status().role === "leader");
    if (leader?.loop === undefined || outstanding >= 16) return;
    proposals++;
    outstanding++;
    const bytes = stampCommand(encodeCommand(kind, fields), Math.floor(leader.clock.wallMs()));
    leader.loop.propose(bytes, {
      resolve: ({ result }) => {
        outstanding--;
        if (result === undefined) return;
        const ok = result.result.ok;
        acked.push({
          kind,
          index: result.index,
          ok,
          ...(name === undefined ? {} : { name }),
          ...(ok && result.result.value.volumeId !== undefined
            ? { volumeId: result.result.value.volumeId }
            : {}),
        });
        if (ok) onOk?.(result);
      },
      reject: () => {
        outstanding--;
      },
    });
  };
  const clientStep = (): void => {
    const r = prng.int(100);
    const host = hostIds[prng.int(hostIds.length)] ?? 11;
    if (r < 5) {
      propose("initCluster", { clusterId: "sim" });
    } else if (r < 15) {
      propose("addNode", {
        nodeId: host,
        controlAddress: `h${host}:1`,
        dataAddress: `h${host}:2`,
        failureDomain: `rack-${host % 3}`,
        disks: [{ diskId: "d", path: "/d", capacityBytes: 1024 * GiB }],
      });
    } else if (r < 35) {
      const name = `v${volumeSeq++}`;
      const chunks = 1 + prng.int(4);
      propose(
        "createVolume",
        { name, sizeBytes: chunks * 64 * MiB },
        (a) => {
          const volumeId = a.result.ok ? a.result.value.volumeId : undefined;
          if (volumeId !== undefined) volumes.push({ volumeId, chunks });
        },
        name,
      );
    } else if (r < 50) {
      propose("nodeHeartbeat", {
        nodeId: host,
        disks: [{ diskId: "d", usedBytes: prng.int(GiB) }],
      });
    } else if (r < 60 && volumes.length > 0) {
      const v = volumes[prng.int(volumes.length)];
      if (v === undefined) return;
      propose("openVolume", { volumeId: v.volumeId, nodeId: host, takeover: true }, (a) => {
        const epoch = a.result.ok ? a.result.value.epoch : undefined;
        if (epoch !== undefined) open.set(v.volumeId, { nodeId: host, epoch });
      });
    } else if (r < 80 && open.size > 0) {
      const entries = [...open];
      const [volumeId, lease] = entries[prng.int(entries.length)] ?? [0, { nodeId: 0, epoch: 0 }];
      const chunks = volumes.find((v) => v.volumeId === volumeId)?.chunks ?? 1;
      propose("placeChunk", {
        volumeId,
        chunkIndex: prng.int(chunks),
        epoch: lease.epoch,
        preferredNodeId: lease.nodeId,
      });
    } else if (r < 85 && volumes.length > 0) {
      const v = volumes[prng.int(volumes.length)];
      if (v !== undefined)
        propose("createSnapshot", { volumeId: v.volumeId, name: `s${proposals}` });
    } else if (r < 90) {
      propose("setConfig", { gracePeriodMs: 1_000 + prng.int(60_000) });
    } else if (r < 95) {
      propose("markNodeDown", { nodeId: host });
    } else {
      propose("drainNode", { nodeId: host, cancel: prng.int(2) === 0 });
    }
  };

  // ---- Faults ----
  let faultsOn = true;
  const maxDown = memberCount === 3 ? 1 : 2;
  const faultStep = (): void => {
    const list = [...members.values()];
    const down = list.filter((m) => m.loop === undefined);
    const r = prng.int(100);
    if (r < 30 && down.length < maxDown) {
      const up = list.filter((m) => m.loop !== undefined);
      const victim = up[prng.int(up.length)];
      if (victim !== undefined) crash(victim);
    } else if (r < 55 && down.length > 0) {
      const back = down[prng.int(down.length)];
      if (back !== undefined) {
        restarts++;
        start(back);
      }
    } else if (r < 70) {
      const shuffled = prng.shuffle([...ids]);
      const cut = 1 + prng.int(ids.length - 1);
      network.split(shuffled.slice(0, cut), shuffled.slice(cut));
    } else if (r < 85) {
      network.heal();
    } else {
      network.setFaults(prng.int(2) === 0 ? LOSSY : CALM_NETWORK);
    }
  };

  const every = (minUs: number, maxUs: number, fn: () => void, active: () => boolean): void => {
    const loop = (): void => {
      if (!active()) return;
      fn();
      scheduler.after(minUs + prng.int(maxUs - minUs), loop);
    };
    scheduler.after(minUs, loop);
  };
  let clientsOn = true;
  every(2_000, 20_000, clientStep, () => clientsOn);
  every(100_000, 600_000, faultStep, () => faultsOn);

  const SAFETY_US = 10_000_000;
  scheduler.run(SAFETY_US, () => {});
  // ---- Heal: everything up, calm network, no more faults; then a final proposal ----
  faultsOn = false;
  clientsOn = false;
  network.heal();
  network.setFaults(CALM_NETWORK);
  for (const member of members.values()) {
    if (member.loop === undefined) {
      restarts++;
      start(member);
    }
  }
  let finalIndex = 0;
  const deadline = scheduler.nowUs() + 20_000_000;
  let lastTry = 0;
  scheduler.run(
    deadline,
    () => {
      if (finalIndex !== 0 || scheduler.nowUs() - lastTry < 200_000) return;
      lastTry = scheduler.nowUs();
      const leader = [...members.values()].find((m) => m.loop?.status().role === "leader");
      if (leader?.loop === undefined) return;
      const bytes = stampCommand(
        encodeCommand("setConfig", { gracePeriodMs: 30_000 }),
        Math.floor(leader.clock.wallMs()),
      );
      leader.loop.propose(bytes, {
        resolve: ({ index }) => {
          finalIndex = index;
        },
        reject: () => {},
      });
    },
    () =>
      finalIndex !== 0 &&
      [...members.values()].every((m) => (m.loop?.status().appliedIndex ?? 0) >= finalIndex),
  );
  if (failures.length > 0) throw new Failure(failures.slice(0, 3).join("; "));
  if (finalIndex === 0) throw new Failure("no final proposal committed after healing");
  const maps = [...members.values()].map((m) => m.machine.map);
  const lagging = [...members.values()].filter(
    (m) => (m.loop?.status().appliedIndex ?? 0) < finalIndex,
  );
  if (lagging.length > 0) {
    throw new Failure(`members ${lagging.map((m) => m.id)} did not apply ${finalIndex}`);
  }
  // Equal applied index → identical bytes (the hash check covered every index on the way).
  const reference = Buffer.from(maps[0]?.snapshot() ?? new Uint8Array(0));
  for (const map of maps) {
    if (!reference.equals(Buffer.from(map.snapshot()))) {
      throw new Failure("maps differ after healing at the same applied index");
    }
    const violations = map.checkInvariants();
    if (violations.length > 0) throw new Failure(`invariants: ${violations.join("; ")}`);
    for (const a of acked) {
      if (a.index > finalIndex) throw new Failure(`acked index ${a.index} past the final one`);
      if (a.kind === "createVolume" && a.ok && a.name !== undefined) {
        if (map.volumeByName(a.name)?.volumeId !== a.volumeId) {
          throw new Failure(`acknowledged volume ${a.name} missing from a map`);
        }
      }
    }
  }
  for (const member of members.values()) crash(member);
  const final = maps[0];
  return {
    acked: acked.length,
    proposals,
    restarts,
    volumes: final?.volumes().length ?? 0,
    chunks: final?.chunksPlaced ?? 0,
  };
}

function seedsToRun(): number[] {
  const one = process.env.HES_MAP_SIM_SEED;
  if (one !== undefined) return [Number(one)];
  const count = process.env.HES_SOAK === "1" ? 200 : 6;
  const base = Number(process.env.HES_MAP_SIM_BASE ?? 1);
  return [...REGRESSION_SEEDS, ...Array.from({ length: count }, (_, i) => base + i)];
}

test("the cluster map on Raft under crashes, partitions and a lossy network", (t) => {
  const total: SeedResult = { acked: 0, proposals: 0, restarts: 0, volumes: 0, chunks: 0 };
  for (const seed of seedsToRun()) {
    let result: SeedResult;
    try {
      result = runSeed(seed);
    } catch (error) {
      assert.fail(`seed ${seed} failed (replay: HES_MAP_SIM_SEED=${seed}): ${String(error)}`);
    }
    for (const key of Object.keys(total) as Array<keyof SeedResult>) total[key] += result[key];
  }
  assert.ok(total.acked > 0 && total.volumes > 0 && total.chunks > 0, "the runs did something");
  t.diagnostic(
    `${total.acked} acknowledged of ${total.proposals} proposals, ${total.restarts} restarts, ` +
      `${total.volumes} volumes and ${total.chunks} chunks placed in the final maps`,
  );
});

test("the determinism check bites: a member that skips entries is caught", () => {
  assert.throws(() => runSeed(1, { dropApplyOn: 2 }), /map diverged at index/);
});
