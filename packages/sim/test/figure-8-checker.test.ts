/**
 * Goal: show that the simulator's end-to-end checkers see the damage of committing by
 * counting replicas of an earlier term, when the Figure 8 schedule happens. Random runs
 * rarely produce that schedule (three leaders in a row, two crashing within milliseconds;
 * see the README), so this replays it exactly: the transcripts figure-8-unsafe.txt (rule
 * off) and figure-8.txt (rule on) from @hes/raft, with RaftChecker (end-to-end checks only)
 * watching the cores after every command.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { RaftChecker } from "@hes/sim";
import { InteractionEnv, parseTranscript } from "../../raft/test/interaction.js";

function replay(file: string): string | undefined {
  const path = new URL(`../../raft/test/testdata/${file}`, import.meta.url).pathname;
  const env = new InteractionEnv();
  const checker = new RaftChecker(() => 0, false);
  for (const block of parseTranscript(readFileSync(path, "utf8"))) {
    env.run(block.command);
    checker.afterEvent([...env.members].map(([id, member]) => ({ id, core: member.core })));
  }
  return checker.violation;
}

test("Figure 8 with commitment by counting: the checkers report the lost entry", () => {
  assert.match(replay("figure-8-unsafe.txt") ?? "", /leader completeness|committed entry changed/);
});

test("Figure 8 with the rule: no violation", () => {
  assert.equal(replay("figure-8.txt"), undefined);
  assert.equal(replay("figure-8-commit.txt"), undefined);
});
