/**
 * Goal: pin down the core's behaviour in the paper's scenarios, step by step, the way etcd's
 * raft does with its testdata files. Method: each file under testdata/ is a script of
 * commands for InteractionEnv (interaction.ts) with the exact output expected after each;
 * a mismatch fails with both texts. HES_REWRITE=1 rewrites the files from the actual output
 * (then review the diff: a transcript is only as good as the reading that accepted it).
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { InteractionEnv, parseTranscript, renderTranscript } from "./interaction.js";

const dir = new URL("./testdata/", import.meta.url).pathname;
const rewrite = process.env.HES_REWRITE === "1";

for (const file of readdirSync(dir)
  .filter((f) => f.endsWith(".txt"))
  .sort()) {
  test(`transcript ${file}`, () => {
    const path = join(dir, file);
    const blocks = parseTranscript(readFileSync(path, "utf8"));
    assert.ok(blocks.length > 0, "a transcript has commands");
    const env = new InteractionEnv();
    const outputs: string[] = [];
    for (const [i, block] of blocks.entries()) {
      const actual = env.run(block.command);
      outputs.push(actual);
      if (!rewrite) {
        assert.equal(actual, block.expected, `${file}: block ${i + 1}: ${block.command}`);
      }
    }
    if (rewrite) writeFileSync(path, renderTranscript(blocks, outputs));
  });
}
