// Connects, sends a line, expects it echoed: exit 0 if it was within TIMEOUT_MS, 1 otherwise.
// node tcp-probe.mjs HOST PORT TIMEOUT_MS
import net from "node:net";

const [host, port, timeoutMs] = process.argv.slice(2);
const payload = `probe ${process.pid}\n`;
const socket = net.connect(Number(port), host);
const timer = setTimeout(() => {
  console.log("timeout");
  process.exit(1);
}, Number(timeoutMs));
let received = "";
socket.on("connect", () => socket.write(payload));
socket.on("data", (chunk) => {
  received += chunk.toString();
  if (received === payload) {
    clearTimeout(timer);
    console.log("ok");
    process.exit(0);
  }
});
socket.on("error", (err) => {
  console.log(`error ${err.code}`);
  process.exit(1);
});
