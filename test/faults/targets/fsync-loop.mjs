// The small real target for disk faults: writes 4 KiB and fdatasyncs in a loop on FILE and
// prints one line per round ("ok N ms" or "err CODE"), so a test sees exactly what the
// injected fault did. node fsync-loop.mjs FILE [append]
import fs from "node:fs";

const [file, mode] = process.argv.slice(2);
const fd = fs.openSync(file, "w");
// "append" grows the file every round (disk-full tests); default rewrites 64 blocks in place.
const positionOf = (round) => (mode === "append" ? round : round % 64) * 4096;
const block = Buffer.alloc(4096, 0x5a);
let round = 0;
function once() {
  const start = performance.now();
  try {
    fs.writeSync(fd, block, 0, block.length, positionOf(round));
    fs.fdatasyncSync(fd);
    console.log(`ok ${round} ${(performance.now() - start).toFixed(1)}`);
  } catch (err) {
    console.log(`err ${err.code} ${round}`);
  }
  round++;
  setTimeout(once, 5);
}
once();
