/**
 * A self-signed TLS certificate for 127.0.0.1, made in-process (node:crypto has key generation and
 * signing but no certificate builder, so the X.509 structure is DER-encoded here): the TLS tests
 * need no openssl binary and write no files.
 *
 * The certificate is its own CA: a client that trusts it (grpc.credentials.createSsl(cert)) can
 * reach a server that presents it as localhost or 127.0.0.1 (its subjectAltName), and nothing else.
 * Dial it as localhost: Node warns (DEP0123) when TLS is given an IP address as the server name.
 */
import { createSign, generateKeyPairSync, randomBytes } from "node:crypto";

/** One DER element: tag, definite length, content. */
function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  let length: Buffer;
  if (body.length < 0x80) {
    length = Buffer.from([body.length]);
  } else {
    const bytes: number[] = [];
    for (let n = body.length; n > 0; n = Math.floor(n / 256)) {
      bytes.unshift(n % 256);
    }
    length = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), length, body]);
}

const sequence = (...items: Buffer[]): Buffer => der(0x30, ...items);

function oid(dotted: string): Buffer {
  const [first = 0, second = 0, ...rest] = dotted.split(".").map(Number);
  const bytes = [first * 40 + second];
  for (const arc of rest) {
    const base128 = [arc & 0x7f];
    for (let n = arc >>> 7; n > 0; n >>>= 7) {
      base128.unshift(0x80 | (n & 0x7f));
    }
    bytes.push(...base128);
  }
  return der(0x06, Buffer.from(bytes));
}

/** UTCTime (valid to 2049), e.g. 261206095700Z. */
function utcTime(date: Date): Buffer {
  const text = date.toISOString().replace(/[-:T]/g, "").slice(2, 14) + "Z";
  return der(0x17, Buffer.from(text, "ascii"));
}

/** CN=`commonName` as an X.501 Name. */
function name(commonName: string): Buffer {
  return sequence(der(0x31, sequence(oid("2.5.4.3"), der(0x0c, Buffer.from(commonName, "utf8")))));
}

export interface SelfSigned {
  /** PEM certificate: the server presents it, the client trusts it as its root. */
  cert: Buffer;
  /** PEM private key (PKCS#8) of the server. */
  key: Buffer;
}

export function selfSignedCertificate(commonName = "fake-bridge"): SelfSigned {
  const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const ecdsaWithSha256 = sequence(oid("1.2.840.10045.4.3.2"));
  const now = Date.now();
  const serial = randomBytes(8);
  serial[0] = (serial[0] ?? 0) & 0x7f; // a positive INTEGER
  const subjectAltName = sequence(
    oid("2.5.29.17"),
    // GeneralNames: dNSName [2] localhost, iPAddress [7] 127.0.0.1
    der(0x04, sequence(der(0x82, Buffer.from("localhost", "ascii")), der(0x87, Buffer.from([127, 0, 0, 1])))),
  );
  const tbs = sequence(
    der(0xa0, der(0x02, Buffer.from([2]))), // version v3
    der(0x02, serial),
    ecdsaWithSha256,
    name(commonName), // issuer: itself
    sequence(utcTime(new Date(now - 60_000)), utcTime(new Date(now + 24 * 3600_000))),
    name(commonName),
    publicKey.export({ type: "spki", format: "der" }),
    der(0xa3, sequence(subjectAltName)),
  );
  const signature = createSign("SHA256").update(tbs).sign(privateKey); // DER-encoded ECDSA signature
  const certificate = sequence(tbs, ecdsaWithSha256, der(0x03, Buffer.from([0]), signature));
  const base64Lines = certificate.toString("base64").match(/.{1,64}/g) ?? [];
  return {
    cert: Buffer.from(`-----BEGIN CERTIFICATE-----\n${base64Lines.join("\n")}\n-----END CERTIFICATE-----\n`),
    key: Buffer.from(privateKey.export({ type: "pkcs8", format: "pem" })),
  };
}
