// A TCP echo server, the small real target for network faults: node echo-server.mjs HOST PORT.
// Prints "listening" once bound, so the test waits for a condition instead of sleeping.
import net from "node:net";

const [host, port] = process.argv.slice(2);
const server = net.createServer((socket) => socket.pipe(socket));
server.listen(Number(port), host, () => console.log(`listening ${host}:${port}`));
