/**
 * Goal: the certificates `hes cluster init` makes are real: OpenSSL (node's X509Certificate)
 * parses them, each node certificate verifies against the CA and names 127.0.0.1/localhost,
 * and two nodes complete a mutual-TLS handshake with them while a stranger's certificate is
 * refused. Method: generate, parse, and run a real TLS server and clients on loopback.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import * as tls from "node:tls";
import { createClusterCa, issueNodeCertificate } from "../src/index.js";

const subject = { commonName: "hes-node-1", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] };

test("a node certificate parses, chains to the CA and carries the SAN", () => {
  const ca = createClusterCa("hes test CA");
  const node = issueNodeCertificate(ca, subject);
  const caCert = new X509Certificate(ca.certPem);
  const nodeCert = new X509Certificate(node.certPem);
  assert.equal(caCert.ca, true);
  assert.equal(nodeCert.ca, false);
  assert.ok(caCert.verify(caCert.publicKey), "the CA is self-signed");
  assert.ok(nodeCert.verify(caCert.publicKey), "the node certificate is signed by the CA");
  assert.ok(nodeCert.checkIssued(caCert));
  assert.equal(nodeCert.checkIP("127.0.0.1"), "127.0.0.1");
  assert.equal(nodeCert.checkHost("localhost"), "localhost");
  assert.equal(nodeCert.checkIP("10.0.0.1"), undefined);
  assert.equal(nodeCert.subject, "CN=hes-node-1");
  assert.equal(nodeCert.issuer, "CN=hes test CA");
  assert.ok(new Date(nodeCert.validTo) > new Date(Date.now() + 700 * 86_400_000));
  assert.equal(nodeCert.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
  assert.notEqual(
    nodeCert.serialNumber,
    new X509Certificate(issueNodeCertificate(ca, subject).certPem).serialNumber,
  );
});

test("bad subjects are refused before anything is signed", () => {
  const ca = createClusterCa("hes test CA");
  assert.throws(() => issueNodeCertificate(ca, { ...subject, ipAddresses: ["::1"] }), RangeError);
  assert.throws(
    () => issueNodeCertificate(ca, { ...subject, dnsNames: [], ipAddresses: [] }),
    RangeError,
  );
  assert.throws(() => createClusterCa(""), RangeError);
});

async function handshake(
  server: { ca: string; cert: string; key: string },
  client: { ca: string; cert: string; key: string },
): Promise<"ok" | "refused"> {
  const tlsServer = tls.createServer(
    { ...server, requestCert: true, rejectUnauthorized: true },
    (s) => s.end("hello"),
  );
  tlsServer.on("tlsClientError", () => undefined);
  tlsServer.listen(0, "127.0.0.1");
  await once(tlsServer, "listening");
  const { port } = tlsServer.address() as AddressInfo;
  try {
    const socket = tls.connect({ host: "127.0.0.1", port, ...client });
    const outcome = await new Promise<"ok" | "refused">((done) => {
      let data = "";
      socket.on("data", (chunk) => {
        data += chunk;
      });
      socket.on("end", () => done(data === "hello" ? "ok" : "refused"));
      socket.on("error", () => done("refused"));
    });
    socket.destroy();
    return outcome;
  } finally {
    tlsServer.close();
  }
}

test("two nodes of one CA complete mutual TLS; a stranger is refused", async () => {
  const ca = createClusterCa("hes test CA");
  const a = issueNodeCertificate(ca, subject);
  const b = issueNodeCertificate(ca, { ...subject, commonName: "hes-node-2" });
  const other = createClusterCa("another CA");
  const stranger = issueNodeCertificate(other, subject);
  const side = (pair: typeof a, caPem = ca.certPem) => ({
    ca: caPem,
    cert: pair.certPem,
    key: pair.keyPem,
  });
  assert.equal(await handshake(side(a), side(b)), "ok");
  assert.equal(await handshake(side(a), side(stranger)), "refused");
  assert.equal(await handshake(side(a), side(stranger, other.certPem)), "refused");
});
