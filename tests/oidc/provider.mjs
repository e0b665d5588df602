// A real OpenID provider for keyscope's console tests: oidc-provider, the
// certified Node implementation, on loopback, with one confidential client
// and users in groups. Started by tests/oidc_sign_in.rs; prints one JSON
// line ({"issuer": ...}) once it listens.
//
// Environment: PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI.
//
// Test controls (loopback only, for the refusal cases):
//   POST /test/mode?to=MODE   how the token endpoint's next ID tokens are
//                             spoiled: none, tamper (a claim changed after
//                             signing), audience (re-signed for another
//                             client), expired (re-signed, expired an hour
//                             ago); each stays until changed.
//   GET  /test/last-callback  the last redirect back to the client, with
//                             its code and state, to replay.

import { createServer } from "node:http";
import { generateKeyPair, exportJWK, SignJWT, decodeJwt, decodeProtectedHeader, importJWK } from "jose";
import Provider from "oidc-provider";

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;

const USERS = {
  alice: { email: "alice@example.test", groups: ["keyscope-admins"] },
  bob: { email: "bob@example.test", groups: ["acme-admins", "staff"] },
  carol: { email: "carol@example.test", groups: ["staff"] },
  dave: { email: "dave@example.test", groups: ["auditors"] },
};

const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: "test-key", alg: "RS256", use: "sig" };
const signingKey = await importJWK(jwk, "RS256");

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  jwks: { keys: [jwk] },
  claims: { openid: ["sub"], email: ["email"], groups: ["groups"] },
  scopes: ["openid", "email", "groups"],
  // The scope's claims in the ID token itself, as providers are set up to
  // put groups there.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: user.email, groups: user.groups };
      },
    };
  },
  // First-party client: no consent screen.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope("openid email groups");
    await grant.save();
    return grant;
  },
  ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60, Session: 3600, Interaction: 600, Grant: 3600 },
});
provider.proxy = false;

let mode = "none";
let lastCallback = null;

async function spoil(idToken) {
  const claims = decodeJwt(idToken);
  const header = decodeProtectedHeader(idToken);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case "tamper": {
      // The payload changed, the signature kept: it no longer verifies.
      const [h, , s] = idToken.split(".");
      const payload = Buffer.from(JSON.stringify({ ...claims, groups: [...(claims.groups || []), "keyscope-admins", "tampered"] })).toString("base64url");
      return `${h}.${payload}.${s}`;
    }
    case "audience":
      return new SignJWT({ ...claims, aud: "some-other-client" }).setProtectedHeader(header).sign(signingKey);
    case "expired":
      return new SignJWT({ ...claims, iat: now - 7200, exp: now - 3600 }).setProtectedHeader(header).sign(signingKey);
    default:
      return idToken;
  }
}

provider.use(async (ctx, next) => {
  if (ctx.path === "/test/mode" && ctx.method === "POST") {
    mode = ctx.query.to;
    ctx.body = { mode };
    return;
  }
  if (ctx.path === "/test/last-callback") {
    ctx.body = { url: lastCallback };
    return;
  }
  await next();
  const location = ctx.response.get("location");
  if (location && location.startsWith(process.env.REDIRECT_URI)) {
    lastCallback = location;
  }
  if (ctx.path === "/token" && ctx.body && ctx.body.id_token && mode !== "none") {
    ctx.body = { ...ctx.body, id_token: await spoil(ctx.body.id_token) };
  }
});

const server = createServer(provider.callback());
server.listen(port, "127.0.0.1", () => {
  console.log(JSON.stringify({ issuer }));
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
