/**
 * One-line descriptions of messages, entries and Readys for logs, transcript tests and the
 * simulator's failure reports. Stable text: transcript files compare against it.
 */
import { decodeConfChange } from "./conf.js";
import {
  ConfChangeType,
  type Entry,
  EntryType,
  type Message,
  MessageType,
  type Ready,
} from "./types.js";

const MESSAGE_NAMES: Record<number, string> = {
  [MessageType.Append]: "MsgApp",
  [MessageType.AppendResponse]: "MsgAppResp",
  [MessageType.Vote]: "MsgVote",
  [MessageType.VoteResponse]: "MsgVoteResp",
  [MessageType.PreVote]: "MsgPreVote",
  [MessageType.PreVoteResponse]: "MsgPreVoteResp",
  [MessageType.Heartbeat]: "MsgHeartbeat",
  [MessageType.HeartbeatResponse]: "MsgHeartbeatResp",
  [MessageType.Snapshot]: "MsgSnap",
  [MessageType.TimeoutNow]: "MsgTimeoutNow",
  [MessageType.ReadIndex]: "MsgReadIndex",
  [MessageType.ReadIndexResponse]: "MsgReadIndexResp",
};

const CHANGE_NAMES: Record<number, string> = {
  [ConfChangeType.AddLearner]: "add-learner",
  [ConfChangeType.AddVoter]: "add-voter",
  [ConfChangeType.Remove]: "remove",
};

export function messageTypeName(type: number): string {
  return MESSAGE_NAMES[type] ?? `Msg${type}`;
}

/** `term/index` plus what the entry is: `2/5 "put x"`, `1/1 noop`, `3/7 conf add-voter 4`. */
export function describeEntry(entry: Entry): string {
  const at = `${entry.term}/${entry.index}`;
  if (entry.type === EntryType.Noop) return `${at} noop`;
  if (entry.type === EntryType.ConfChange) {
    const { change, confState } = decodeConfChange(entry.data);
    const members = `v(${confState.voters.join(",")}) l(${confState.learners.join(",")})`;
    return `${at} conf ${CHANGE_NAMES[change.type]} ${change.nodeId} → ${members}`;
  }
  return `${at} ${JSON.stringify(new TextDecoder().decode(entry.data))}`;
}

export function describeMessage(m: Message): string {
  const parts = [`${m.from}->${m.to} ${messageTypeName(m.type)} term=${m.term}`];
  switch (m.type) {
    case MessageType.Append:
      parts.push(`prev=${m.logTerm}/${m.index} commit=${m.commit}`);
      if (m.entries.length > 0) parts.push(`[${m.entries.map(describeEntry).join(", ")}]`);
      break;
    case MessageType.AppendResponse:
      if (m.reject) parts.push(`reject index=${m.index} hint=${m.logTerm}/${m.rejectHint}`);
      else parts.push(`index=${m.index}`);
      break;
    case MessageType.Vote:
    case MessageType.PreVote:
      parts.push(`last=${m.logTerm}/${m.index}`);
      if (m.force) parts.push("force");
      break;
    case MessageType.VoteResponse:
    case MessageType.PreVoteResponse:
      parts.push(m.reject ? "rejected" : "granted");
      break;
    case MessageType.Heartbeat:
      parts.push(`commit=${m.commit}`);
      if (m.context !== 0) parts.push(`round=${m.context}`);
      break;
    case MessageType.HeartbeatResponse:
      if (m.context !== 0) parts.push(`round=${m.context}`);
      break;
    case MessageType.Snapshot:
      if (m.snapshot !== undefined) {
        const meta = m.snapshot.meta;
        parts.push(
          `snapshot=${meta.term}/${meta.index} ` +
            `v(${meta.confState.voters.join(",")}) l(${meta.confState.learners.join(",")})`,
        );
      }
      break;
    case MessageType.ReadIndex:
      parts.push(`request=${m.context}`);
      break;
    case MessageType.ReadIndexResponse:
      parts.push(`request=${m.context} index=${m.index}`);
      break;
  }
  return parts.join(" ");
}

/** A multi-line description of a Ready, one item per line, indented by `indent`. */
export function describeReady(rd: Ready, indent = "  "): string[] {
  const lines: string[] = [];
  if (rd.softState !== undefined) {
    lines.push(`${indent}soft: leader=${rd.softState.leaderId} role=${rd.softState.role}`);
  }
  if (rd.hardState !== undefined) {
    const h = rd.hardState;
    lines.push(`${indent}hard: term=${h.term} vote=${h.vote} commit=${h.commit}`);
  }
  if (rd.snapshot !== undefined) {
    lines.push(`${indent}snapshot: ${rd.snapshot.meta.term}/${rd.snapshot.meta.index}`);
  }
  if (rd.truncateAfter !== undefined) lines.push(`${indent}truncate after ${rd.truncateAfter}`);
  if (rd.entries.length > 0) {
    lines.push(`${indent}entries:`);
    for (const e of rd.entries) lines.push(`${indent}  ${describeEntry(e)}`);
  }
  if (rd.messages.length > 0) {
    lines.push(`${indent}messages:`);
    for (const m of rd.messages) lines.push(`${indent}  ${describeMessage(m)}`);
  }
  if (rd.restore !== undefined) {
    lines.push(`${indent}restore: ${rd.restore.meta.term}/${rd.restore.meta.index}`);
  }
  if (rd.committedEntries.length > 0) {
    lines.push(`${indent}apply:`);
    for (const e of rd.committedEntries) lines.push(`${indent}  ${describeEntry(e)}`);
  }
  for (const r of rd.readStates)
    lines.push(`${indent}read: request=${r.requestId} index=${r.index}`);
  return lines;
}
