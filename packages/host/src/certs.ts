/**
 * The cluster CA and node certificates made by `hes cluster init`, written in plain JS so that
 * the README's first command needs nothing but Node (no openssl binary).
 *
 * Why our own DER instead of a library: the X.509 libraries on the registry (@peculiar/x509 and
 * friends) pull a dozen packages and need a global `reflect-metadata` polyfill, which a library
 * must not install into its host's process. An ECDSA P-256 certificate is a few fixed ASN.1
 * structures: node:crypto makes the keys and the signature, this file lays out the bytes, and
 * node's `X509Certificate` (OpenSSL) parses and verifies the result in the tests.
 */
import {
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
} from "node:crypto";
import { CERT_VALIDITY_DAYS } from "./limits.js";

/** A certificate and its private key, both PEM. */
export interface CertificatePair {
  readonly certPem: string;
  readonly keyPem: string;
}

/** Who a node certificate names: DNS names and IP addresses for the SAN extension. */
export interface NodeCertificateSubject {
  readonly commonName: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
}

const OID_EC_WITH_SHA256 = "1.2.840.10045.4.3.2";
const OID_COMMON_NAME = "2.5.4.3";
const OID_BASIC_CONSTRAINTS = "2.5.29.19";
const OID_KEY_USAGE = "2.5.29.15";
const OID_EXT_KEY_USAGE = "2.5.29.37";
const OID_SUBJECT_ALT_NAME = "2.5.29.17";
const OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const DAY_MS = 86_400_000;

// ---- minimal DER encoder (definite lengths only) ------------------------------------------

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const sequence = (...items: Buffer[]): Buffer => tlv(0x30, ...items);
const set = (...items: Buffer[]): Buffer => tlv(0x31, ...items);
const explicit = (n: number, inner: Buffer): Buffer => tlv(0xa0 | n, inner);

function oid(dotted: string): Buffer {
  const parts = dotted.split(".").map(Number);
  const first = parts[0] ?? 0;
  const second = parts[1] ?? 0;
  const out: number[] = [first * 40 + second];
  for (const part of parts.slice(2)) {
    const base128: number[] = [part & 0x7f];
    for (let rest = Math.floor(part / 128); rest > 0; rest = Math.floor(rest / 128)) {
      base128.unshift(0x80 | (rest & 0x7f));
    }
    out.push(...base128);
  }
  return tlv(0x06, Buffer.from(out));
}

/** A non-negative INTEGER from big-endian magnitude bytes (a 0x00 pad keeps it positive). */
function unsignedInteger(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const pad = (trimmed[0] ?? 0) & 0x80 ? Buffer.from([0]) : Buffer.alloc(0);
  return tlv(0x02, pad, trimmed);
}

const utf8String = (text: string): Buffer => tlv(0x0c, Buffer.from(text, "utf8"));
const booleanTrue = (): Buffer => tlv(0x01, Buffer.from([0xff]));
const octetString = (content: Buffer): Buffer => tlv(0x04, content);
const bitString = (content: Buffer, unusedBits = 0): Buffer =>
  tlv(0x03, Buffer.from([unusedBits]), content);

/** UTCTime until 2049, GeneralizedTime after (RFC 5280 §4.1.2.5). */
function derTime(date: Date): Buffer {
  const iso = date.toISOString(); // 2026-11-22T07:10:01.000Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, ""); // 20261122071001
  if (date.getUTCFullYear() < 2050) return tlv(0x17, Buffer.from(`${digits.slice(2)}Z`));
  return tlv(0x18, Buffer.from(`${digits}Z`));
}

const name = (commonName: string): Buffer =>
  sequence(set(sequence(oid(OID_COMMON_NAME), utf8String(commonName))));

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [booleanTrue()] : []), octetString(value));
}

function ipAddressBytes(address: string): Buffer {
  const parts = address.split(".");
  const octets = parts.map(Number);
  if (parts.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) {
    throw new RangeError(`ipAddresses: ${JSON.stringify(address)} is not an IPv4 address`);
  }
  return Buffer.from(octets);
}

// ---- certificates -------------------------------------------------------------------------

interface TbsFields {
  readonly issuer: string;
  readonly subject: string;
  readonly publicKeyDer: Buffer;
  readonly extensions: Buffer[];
  readonly now: Date;
  readonly validityDays: number;
}

function signCertificate(fields: TbsFields, issuerKeyPem: string): string {
  const algorithm = sequence(oid(OID_EC_WITH_SHA256));
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x01; // positive and never zero
  // Backdate an hour so that a peer whose clock lags a little still accepts a fresh cert.
  const notBefore = new Date(fields.now.getTime() - 3_600_000);
  const notAfter = new Date(fields.now.getTime() + fields.validityDays * DAY_MS);
  const tbs = sequence(
    explicit(0, tlv(0x02, Buffer.from([2]))), // v3
    unsignedInteger(serial),
    algorithm,
    name(fields.issuer),
    sequence(derTime(notBefore), derTime(notAfter)),
    name(fields.subject),
    fields.publicKeyDer,
    explicit(3, sequence(...fields.extensions)),
  );
  const signature = sign("sha256", tbs, createPrivateKey(issuerKeyPem)); // DER ECDSA-Sig-Value
  const der = sequence(tbs, algorithm, bitString(signature));
  return toPem("CERTIFICATE", der);
}

function toPem(label: string, der: Buffer): string {
  const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function newKeyPair(): { keyPem: string; publicKeyDer: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return {
    keyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicKeyDer: publicKey.export({ type: "spki", format: "der" }),
  };
}

/** A self-signed cluster CA (ECDSA P-256, may sign node certificates only: pathLen 0). */
export function createClusterCa(
  commonName: string,
  options: { now?: Date; validityDays?: number } = {},
): CertificatePair {
  if (typeof commonName !== "string" || commonName.length === 0 || commonName.length > 64) {
    throw new RangeError("commonName must be a string of 1 to 64 characters");
  }
  const { keyPem, publicKeyDer } = newKeyPair();
  const certPem = signCertificate(
    {
      issuer: commonName,
      subject: commonName,
      publicKeyDer,
      now: options.now ?? new Date(),
      validityDays: options.validityDays ?? CERT_VALIDITY_DAYS,
      extensions: [
        extension(
          OID_BASIC_CONSTRAINTS,
          true,
          sequence(booleanTrue(), tlv(0x02, Buffer.from([0]))),
        ),
        extension(OID_KEY_USAGE, true, bitString(Buffer.from([0x06]), 1)), // keyCertSign, cRLSign
      ],
    },
    keyPem,
  );
  return { certPem, keyPem };
}

/**
 * A node certificate signed by the cluster CA, good for both ends of mutual TLS (serverAuth and
 * clientAuth), naming the node's loopback addresses in its SAN.
 */
export function issueNodeCertificate(
  ca: CertificatePair,
  subject: NodeCertificateSubject,
  options: { now?: Date; validityDays?: number } = {},
): CertificatePair {
  if (subject.dnsNames.length + subject.ipAddresses.length === 0) {
    throw new RangeError("a node certificate needs at least one DNS name or IP address");
  }
  const caSubject = caCommonName(ca.certPem); // fails early on a malformed CA certificate
  const { keyPem, publicKeyDer } = newKeyPair();
  const altNames = [
    ...subject.dnsNames.map((dns) => tlv(0x82, Buffer.from(dns, "ascii"))),
    ...subject.ipAddresses.map((ip) => tlv(0x87, ipAddressBytes(ip))),
  ];
  const certPem = signCertificate(
    {
      issuer: caSubject,
      subject: subject.commonName,
      publicKeyDer,
      now: options.now ?? new Date(),
      validityDays: options.validityDays ?? CERT_VALIDITY_DAYS,
      extensions: [
        extension(OID_BASIC_CONSTRAINTS, true, sequence()),
        extension(OID_KEY_USAGE, true, bitString(Buffer.from([0x80]), 7)), // digitalSignature
        extension(OID_EXT_KEY_USAGE, false, sequence(oid(OID_SERVER_AUTH), oid(OID_CLIENT_AUTH))),
        extension(OID_SUBJECT_ALT_NAME, false, sequence(...altNames)),
      ],
    },
    ca.keyPem,
  );
  return { certPem, keyPem };
}

/** The CA's CN, which becomes the issuer name of the certificates it signs (bytes must match). */
function caCommonName(certPem: string): string {
  const match = /^CN=(.*)$/m.exec(new X509Certificate(certPem).subject);
  if (match?.[1] === undefined) throw new RangeError("the CA certificate has no CN");
  return match[1];
}
