// Mint a token the progress gateway accepts, as an application's backend would (docs/auth.md).
// node:crypto only, no npm packages. The gateway reads the owner from `sub` and requires `exp`;
// `aud` and `iss` only matter when it is configured to check them.
//
//   # HS256 with the secret the gateway has as GATEWAY_SECRET:
//   GATEWAY_SECRET=... node examples/mint_token.mjs --sub alice
//   # RS256 / ES256 with a private key whose public half the gateway knows (a PEM file, or
//   # GATEWAY_JWKS_URL where --kid names the key):
//   node examples/mint_token.mjs --sub alice --key private.pem --alg ES256 --kid key-2026-01
import { createHmac, createPrivateKey, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const b64url = (data) => Buffer.from(data).toString("base64url");

/** A compact JWS for owner `sub`, valid for `ttlS` seconds (short-lived: no revocation list). */
export function mintToken({ sub, ttlS = 600, secret, privateKeyPem, alg = "HS256", kid, audience, issuer }) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, iat: now, exp: now + ttlS };
  if (audience !== undefined) claims.aud = audience;
  if (issuer !== undefined) claims.iss = issuer;
  const header = { alg, typ: "JWT", ...(kid !== undefined ? { kid } : {}) };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  let signature;
  if (alg === "HS256") {
    if (!secret) throw new Error("HS256 needs the shared secret (GATEWAY_SECRET)");
    signature = createHmac("sha256", secret).update(input).digest();
  } else if (alg === "RS256" || alg === "ES256") {
    if (!privateKeyPem) throw new Error(`${alg} needs a private key (--key)`);
    const key = createPrivateKey(privateKeyPem);
    // A JWS ES256 signature is r || s (IEEE P1363), not the DER node:crypto makes by default.
    const signer = alg === "ES256" ? { key, dsaEncoding: "ieee-p1363" } : key;
    signature = sign("sha256", Buffer.from(input), signer);
  } else {
    throw new Error(`unsupported algorithm ${alg}: use HS256, RS256 or ES256`);
  }
  return `${input}.${b64url(signature)}`;
}

function main() {
  const { values } = parseArgs({
    options: {
      sub: { type: "string" },
      ttl: { type: "string", default: "600" },
      alg: { type: "string", default: "HS256" },
      key: { type: "string" },
      kid: { type: "string" },
      aud: { type: "string" },
      iss: { type: "string" },
    },
  });
  if (!values.sub) throw new Error("--sub is required: the owner who may watch the jobs");
  const token = mintToken({
    sub: values.sub,
    ttlS: Number.parseInt(values.ttl, 10),
    secret: process.env.GATEWAY_SECRET,
    privateKeyPem: values.key ? readFileSync(values.key) : undefined,
    alg: values.alg,
    kid: values.kid,
    audience: values.aud,
    issuer: values.iss,
  });
  console.log(token);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    main();
  } catch (error) {
    console.error(`mint_token: ${error.message}`);
    process.exit(1);
  }
}
