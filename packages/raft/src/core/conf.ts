/**
 * Membership: configurations, quorums and the encoding of membership-change entries.
 *
 * Changes are single-server (thesis §4.1): each change adds a learner, promotes one learner
 * to voter, or removes one member, so any majority of the old voters overlaps any majority of
 * the new. A configuration takes effect as soon as its entry is in a member's log (appended,
 * not committed), and reverts if that entry is truncated. The leader proposes a change only
 * after it has committed an entry of its own term and while no other change is uncommitted
 * (the fix for the single-server bug found after the thesis).
 *
 * A change entry carries the complete new configuration, not a delta, so a member that
 * joins with an empty log learns the whole membership from the first change it receives.
 */
import { assert, type NodeId } from "@hes/base";
import { type ConfChange, ConfChangeType, type ConfState } from "./types.js";

const CONF_ENCODING_VERSION = 1;

/** An empty configuration (a member waiting to be added). */
export const EMPTY_CONF: ConfState = Object.freeze({ voters: [], learners: [] });

/** Builds a sorted, de-duplicated configuration; voters win over learners. */
export function makeConfState(voters: readonly NodeId[], learners: readonly NodeId[]): ConfState {
  const v = [...new Set(voters)].sort((a, b) => a - b);
  const l = [...new Set(learners)].filter((id) => !v.includes(id)).sort((a, b) => a - b);
  return { voters: v, learners: l };
}

/** True when both configurations hold the same members in the same roles. */
export function confEquals(a: ConfState, b: ConfState): boolean {
  return sameList(a.voters, b.voters) && sameList(a.learners, b.learners);
}

function sameList(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

/** Smallest number of voters that forms a majority. */
export function quorumOf(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

/**
 * The configuration after `change`, or a reason it is not a valid single-server change.
 * (Whether the learner is caught up is the leader's check; this is only about membership.)
 */
export function applyConfChange(conf: ConfState, change: ConfChange): ConfState | string {
  const isVoter = conf.voters.includes(change.nodeId);
  const isLearner = conf.learners.includes(change.nodeId);
  switch (change.type) {
    case ConfChangeType.AddLearner:
      if (isVoter || isLearner) return `node ${change.nodeId} is already a member`;
      return makeConfState(conf.voters, [...conf.learners, change.nodeId]);
    case ConfChangeType.AddVoter:
      if (isVoter) return `node ${change.nodeId} is already a voter`;
      if (!isLearner) return `node ${change.nodeId} must join as a learner first`;
      return makeConfState(
        [...conf.voters, change.nodeId],
        conf.learners.filter((id) => id !== change.nodeId),
      );
    case ConfChangeType.Remove:
      if (!isVoter && !isLearner) return `node ${change.nodeId} is not a member`;
      if (isVoter && conf.voters.length === 1) return "cannot remove the last voter";
      return makeConfState(
        conf.voters.filter((id) => id !== change.nodeId),
        conf.learners.filter((id) => id !== change.nodeId),
      );
  }
}

/** What a membership-change entry holds: the change, and the configuration it produces. */
export interface ConfChangeRecord {
  readonly change: ConfChange;
  readonly confState: ConfState;
}

/**
 * Encodes a change entry's data: version u8, type u8, node id u32, voter count u16, voters
 * u32…, learner count u16, learners u32…, then the context bytes to the end. Little-endian.
 */
export function encodeConfChange(record: ConfChangeRecord): Uint8Array {
  const { change, confState } = record;
  const context = change.context ?? new Uint8Array(0);
  const lengthBytes =
    1 + 1 + 4 + 2 + 4 * confState.voters.length + 2 + 4 * confState.learners.length;
  const out = new Uint8Array(lengthBytes + context.byteLength);
  const view = new DataView(out.buffer);
  let at = 0;
  view.setUint8(at, CONF_ENCODING_VERSION);
  view.setUint8(at + 1, change.type);
  view.setUint32(at + 2, change.nodeId, true);
  at += 6;
  for (const list of [confState.voters, confState.learners]) {
    view.setUint16(at, list.length, true);
    at += 2;
    for (const id of list) {
      view.setUint32(at, id, true);
      at += 4;
    }
  }
  out.set(context, at);
  return out;
}

/** Decodes {@link encodeConfChange}. Entries come from members' logs: a bad one is a bug. */
export function decodeConfChange(data: Uint8Array): ConfChangeRecord {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  assert(data.byteLength >= 10, "conf change entry too short");
  assert(view.getUint8(0) === CONF_ENCODING_VERSION, "conf change entry: unknown version");
  const type = view.getUint8(1) as ConfChangeType;
  assert(
    type === ConfChangeType.AddVoter ||
      type === ConfChangeType.AddLearner ||
      type === ConfChangeType.Remove,
    `conf change entry: unknown type ${type}`,
  );
  const nodeId = view.getUint32(2, true);
  let at = 6;
  const lists: NodeId[][] = [];
  for (let n = 0; n < 2; n++) {
    assert(at + 2 <= data.byteLength, "conf change entry truncated");
    const count = view.getUint16(at, true);
    at += 2;
    assert(at + 4 * count <= data.byteLength, "conf change entry truncated");
    const list: NodeId[] = [];
    for (let i = 0; i < count; i++) list.push(view.getUint32(at + 4 * i, true));
    at += 4 * count;
    lists.push(list);
  }
  const context = data.subarray(at);
  return {
    change: context.byteLength > 0 ? { type, nodeId, context } : { type, nodeId },
    confState: makeConfState(lists[0] ?? [], lists[1] ?? []),
  };
}
