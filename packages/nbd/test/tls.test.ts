/**
 * Goal: NBD over TLS works with real clients and refuses everything else: STARTTLS upgrades
 * the connection (mutual X.509), qemu-img / nbdinfo / nbdcopy connect with certificates, a
 * plaintext client or one with a certificate from another CA gets nothing, and options
 * before STARTTLS get NBD_REP_ERR_TLS_REQD. Method: a CA, server and client certificates
 * made by openssl in a scratch directory; a TLS listener on loopback TCP; real clients as
 * child processes plus our raw client for the byte-level checks.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { nullLogger } from "@hes/base";
import { MemoryBlockDevice } from "@hes/blockdev";
import { NbdServer } from "@hes/nbd";
import { infoData, NBD, RawClient } from "./raw-client.js";
import { run, runAny, skipWithout } from "./tools.js";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "hes-nbd-tls-"));
const pki = join(dir, "pki");
/** What qemu's tls-creds-x509 and libnbd's tls-certificates expect in a client directory. */
const clientDir = join(dir, "client");
const strangerDir = join(dir, "stranger");
const device = new MemoryBlockDevice({ sizeBytes: 16 * MiB });
const server = new NbdServer({ logger: nullLogger });
let port = 0;
const opensslSkip = skipWithout("openssl");

/** Makes a key and a certificate signed by `ca` (or self-signed CA when `ca` is undefined). */
async function certificate(
  name: string,
  subject: string,
  extensions: string,
  ca?: string,
): Promise<void> {
  const key = join(pki, `${name}-key.pem`);
  const cert = join(pki, `${name}-cert.pem`);
  const ext = join(pki, `${name}.ext`);
  writeFileSync(ext, extensions);
  await run("openssl", ["genrsa", "-out", key, "2048"]);
  if (ca === undefined) {
    await run("openssl", [
      "req",
      "-x509",
      "-new",
      "-key",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      subject,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    return;
  }
  const csr = join(pki, `${name}.csr`);
  await run("openssl", ["req", "-new", "-key", key, "-out", csr, "-subj", subject]);
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    join(pki, `${ca}-cert.pem`),
    "-CAkey",
    join(pki, `${ca}-key.pem`),
    "-CAcreateserial",
    "-out",
    cert,
    "-days",
    "2",
    "-extfile",
    ext,
  ]);
}

function clientDirectory(target: string, ca: string, client: string): void {
  mkdirSync(target, { recursive: true });
  copyFileSync(join(pki, `${ca}-cert.pem`), join(target, "ca-cert.pem"));
  copyFileSync(join(pki, `${client}-cert.pem`), join(target, "client-cert.pem"));
  copyFileSync(join(pki, `${client}-key.pem`), join(target, "client-key.pem"));
}

before(async () => {
  if (opensslSkip !== false) return;
  mkdirSync(pki, { recursive: true });
  await certificate("ca", "/CN=hes test CA", "");
  await certificate("other-ca", "/CN=another CA", "");
  await certificate(
    "server",
    "/CN=localhost",
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=critical,digitalSignature,keyEncipherment\n" +
      "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    "ca",
  );
  const clientExtensions =
    "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n" +
    "basicConstraints=CA:FALSE\n";
  await certificate("client", "/CN=hes client", clientExtensions, "ca");
  await certificate("stranger", "/CN=stranger", clientExtensions, "other-ca");
  clientDirectory(clientDir, "ca", "client");
  // Trusts our server's CA, but presents a certificate our server does not trust.
  clientDirectory(strangerDir, "ca", "stranger");
  server.addExport({ name: "secure", device });
  const bound = await server.listen({
    host: "127.0.0.1",
    port: 0,
    tls: {
      key: readFileSync(join(pki, "server-key.pem")),
      cert: readFileSync(join(pki, "server-cert.pem")),
      ca: readFileSync(join(pki, "ca-cert.pem")),
    },
  });
  assert.ok("port" in bound);
  port = bound.port;
});

after(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const tlsUri = (query = `tls-certificates=${clientDir}`): string =>
  `nbds://127.0.0.1:${port}/secure?${query}`;

describe("NBD over TLS", { timeout: 120_000 }, () => {
  test("options before STARTTLS are refused; STARTTLS then GO works", {
    skip: opensslSkip,
  }, async () => {
    const client = await RawClient.connect({ host: "127.0.0.1", port });
    await client.greet();
    assert.equal((await client.option(NBD.OPT_LIST))[0]?.type, NBD.REP_ERR_TLS_REQD);
    assert.equal(
      (await client.option(NBD.OPT_GO, infoData("secure", [])))[0]?.type,
      NBD.REP_ERR_TLS_REQD,
    );
    assert.equal((await client.option(NBD.OPT_STRUCTURED_REPLY))[0]?.type, NBD.REP_ERR_TLS_REQD);
    await client.startTls({
      ca: readFileSync(join(pki, "ca-cert.pem")),
      cert: readFileSync(join(clientDir, "client-cert.pem")),
      key: readFileSync(join(clientDir, "client-key.pem")),
      servername: "localhost",
    });
    assert.equal(
      (await client.option(NBD.OPT_STARTTLS))[0]?.type,
      NBD.REP_ERR_INVALID,
      "only once",
    );
    const replies = await client.option(NBD.OPT_GO, infoData("secure", []));
    assert.equal(replies.at(-1)?.type, NBD.REP_ACK);
    const data = randomBytes(4096);
    assert.equal(await client.write(0, data), 0);
    assert.ok(data.equals(await client.read(0, 4096)));
    client.disconnect();
    await client.closed;
  });

  test("EXPORT_NAME before TLS closes the connection", { skip: opensslSkip }, async () => {
    const client = await RawClient.connect({ host: "127.0.0.1", port });
    await client.greet();
    client.sendOption(NBD.OPT_EXPORT_NAME, Buffer.from("secure"));
    await client.closed;
  });

  test("nbdinfo and nbdcopy over nbds:// with client certificates", {
    skip: skipWithout("openssl", "nbdinfo", "nbdcopy"),
  }, async () => {
    const info = await run("nbdinfo", ["--json", tlsUri()]);
    const parsed = JSON.parse(info) as { TLS: boolean; exports: Array<{ "export-size": number }> };
    assert.equal(parsed.TLS, true);
    assert.equal(parsed.exports[0]?.["export-size"], 16 * MiB);
    const source = join(dir, "tls-src.img");
    const image = randomBytes(4 * MiB);
    writeFileSync(source, Buffer.concat([image, Buffer.alloc(12 * MiB)]));
    await run("nbdcopy", [source, tlsUri()]);
    const out = join(dir, "tls-out.img");
    await run("nbdcopy", [tlsUri(), out]);
    assert.ok(image.equals(readFileSync(out).subarray(0, 4 * MiB)));
  });

  test("qemu-img over TLS with tls-creds-x509", {
    skip: skipWithout("openssl", "qemu-img"),
  }, async () => {
    const result = JSON.parse(
      await run("qemu-img", [
        "info",
        "--output=json",
        "--object",
        `tls-creds-x509,id=tls0,endpoint=client,dir=${clientDir}`,
        "--image-opts",
        `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=secure,tls-creds=tls0`,
      ]),
    ) as { "virtual-size": number };
    assert.equal(result["virtual-size"], 16 * MiB);
  });

  test("plaintext clients and untrusted client certificates get nothing", {
    skip: skipWithout("openssl", "nbdinfo"),
  }, async () => {
    const plain = await runAny("nbdinfo", [`nbd://127.0.0.1:${port}/secure`]);
    assert.notEqual(plain.status, 0);
    assert.match(plain.stderr, /opt_go/, "refused in negotiation (NBD_REP_ERR_TLS_REQD)");
    const stranger = await runAny("nbdinfo", [tlsUri(`tls-certificates=${strangerDir}`)]);
    assert.notEqual(stranger.status, 0);
    assert.match(stranger.stderr, /TLS fatal alert/, "the server rejected the certificate");
    assert.equal(device.sizeBytes, 16 * MiB);
  });
});
