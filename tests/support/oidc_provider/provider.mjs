// A real OpenID provider (npm `oidc-provider`) for ICA's sign-in tests, on loopback only.
//
// Usage: node provider.mjs '<json config>'; prints one line {"issuer": "..."} when ready.
// Config: {"client_id", "client_secret", "redirect_uri", "groups": {"<login>": ["<group>"]}}.
// Any login and password are accepted by the provider's development interaction pages;
// the account id (the ID token's `sub`) is the login typed there.
import http from "node:http";
import Provider from "oidc-provider";

const options = JSON.parse(process.argv[2] || "{}");
const groups = options.groups || {};

const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: options.client_id,
        client_secret: options.client_secret,
        redirect_uris: [options.redirect_uri],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    pkce: { required: () => true },
    scopes: ["openid", "profile", "email", "groups"],
    claims: {
      openid: ["sub"],
      email: ["email", "email_verified"],
      profile: ["name"],
      groups: ["groups"],
    },
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ["ica-test-provider-cookie-key"] },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            email: `${id}@example.org`,
            email_verified: true,
            name: id,
            groups: groups[id] || [],
          };
        },
      };
    },
  });
  server.on("request", provider.callback());
  process.stdout.write(JSON.stringify({ issuer }) + "\n");
});

process.on("SIGTERM", () => server.close(() => process.exit(0)));
