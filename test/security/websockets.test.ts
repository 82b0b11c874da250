// Hostile websocket clients (issue 12, findings 5 and 8): credentials are checked at
// connection_init, live connections end when their credentials do, and one caller cannot hold
// unbounded connections or operations.
import { createClient, type Client } from 'graphql-ws';
import { decodeJwt, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createApp, type App } from '../../src/app.js';
import { signSessionToken } from '../../src/modules/orgs/credentials.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from '../helpers/api.js';

// Small caps and a short connection_init timeout, so each limit is reached with a few sockets.
const CAPS = { perUser: 3, perKey: 3, perConnection: 5, initTimeoutMs: 1000 };

let api: TestApi;
let owner: SignedUp;
beforeAll(async () => {
  api = await startTestApi({
    env: {
      CVTRAIN_WS_INIT_TIMEOUT_MS: String(CAPS.initTimeoutMs),
      CVTRAIN_WS_MAX_CONNECTIONS_PER_USER: String(CAPS.perUser),
      CVTRAIN_WS_MAX_CONNECTIONS_PER_API_KEY: String(CAPS.perKey),
      CVTRAIN_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION: String(CAPS.perConnection),
    },
  });
  owner = await signUp(api, 'Sockets');
});
afterAll(() => api?.close());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const wsUrl = (url: string) => url.replace(/^http/, 'ws');
const localId = (globalId: string) => Buffer.from(globalId, 'base64').toString().split(':')[1];
const NODES = 'subscription { gpuNodeUpdated { id status } }';

interface Closed {
  code: number;
  reason: string;
  at: number;
}

/** A raw graphql-transport-ws socket: what arrives, and when and how it closed. */
interface Raw {
  ws: WebSocket;
  messages: { type: string; id?: string; payload?: any }[];
  closed: Promise<Closed>;
}

async function openRaw(url = api.url): Promise<Raw> {
  const ws = new WebSocket(wsUrl(url), 'graphql-transport-ws');
  const messages: Raw['messages'] = [];
  ws.on('message', (data) => messages.push(JSON.parse(String(data))));
  const closed = new Promise<Closed>((resolve) =>
    ws.on('close', (code, reason) => resolve({ code, reason: String(reason), at: Date.now() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return { ws, messages, closed };
}

function sendInit(raw: Raw, payload?: unknown) {
  raw.ws.send(JSON.stringify(payload === undefined ? { type: 'connection_init' } : { type: 'connection_init', payload }));
}

/** Opens a raw socket and authenticates it; resolves once acknowledged or closed. */
async function connectRaw(token: string, url = api.url): Promise<Raw & { acked: boolean }> {
  const raw = await openRaw(url);
  sendInit(raw, { authorization: `Bearer ${token}` });
  const acked = await Promise.race([
    (async () => {
      while (!raw.messages.some((m) => m.type === 'connection_ack')) await sleep(10);
      return true;
    })(),
    raw.closed.then(() => false),
  ]);
  return { ...raw, acked };
}

/** The close, or null if the socket is still open after `ms`. */
const closedWithin = (raw: Raw, ms: number) => Promise.race([raw.closed, sleep(ms).then(() => null)]);

async function waitFor(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

const nodeSubscribers = (app: App = api.app) => app.topics.subscriberCount(app.redisNames.nodesTopic);

async function registerNode(nodeId: string) {
  const res = await fetch(api.url.replace(/\/graphql$/, '/node/v1/register'), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${api.app.config.nodeToken}` },
    body: JSON.stringify({ nodeId, host: 'h', version: '1', slots: 1, gpus: [] }),
  });
  expect(res.status).toBe(200);
}

async function createKey(name: string, by: SignedUp = owner) {
  return ok<{ apiKey: { id: string }; secret: string }>(
    await api.gql(
      `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { __typename ... on CreateApiKeySuccess { createdApiKey { apiKey { id } secret } } } }`,
      { input: { name, role: 'VIEWER' } },
      by.token,
    ),
    'createApiKey',
    'createdApiKey',
  );
}

async function revokeKey(id: string) {
  ok(await api.gql('mutation($id: ID!) { revokeApiKey(id: $id) { __typename ... on RevokeApiKeySuccess { apiKey { id } } } }', { id }, owner.token), 'revokeApiKey', 'apiKey');
}

/**
 * A real graphql-ws client with one gpuNodeUpdated subscription: the node ids it receives, and
 * how its socket closed.
 */
function watchNodes(token: string, url = api.url) {
  const received: string[] = [];
  let closed: Closed | null = null;
  const client: Client = createClient({
    url: wsUrl(url),
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
    on: {
      closed: (event) => {
        const e = event as { code: number; reason: string };
        closed ??= { code: e.code, reason: String(e.reason), at: Date.now() };
      },
    },
  });
  client.subscribe(
    { query: NODES },
    {
      next: (msg) => {
        const node = (msg.data as { gpuNodeUpdated?: { id: string } } | undefined)?.gpuNodeUpdated;
        if (node) received.push(node.id);
      },
      error: () => undefined,
      complete: () => undefined,
    },
  );
  return { client, received, closed: () => closed };
}

/** Registers a node until `watchers` all received it: their subscriptions are live and delivering. */
async function expectDelivering(watchers: { received: string[] }[], nodeId: string) {
  const delivered = () => watchers.every((w) => w.received.includes(nodeId));
  for (let i = 0; i < 20 && !delivered(); i++) {
    await registerNode(nodeId);
    await waitFor(delivered, 200);
  }
  expect(delivered()).toBe(true);
}

describe('credentials at connection_init', () => {
  it('200 sockets with missing, malformed, forged, expired or revoked credentials are all closed with 4401 at once, none acknowledged', async () => {
    const revoked = await createKey('revoked before connecting');
    await revokeKey(revoked.apiKey.id);
    const claims = { userId: localId(owner.userId), orgId: localId(owner.orgId) };
    const expired = (await signSessionToken(claims, api.app.config.jwtSecret, -60)).token;
    const forged = await new SignJWT({ org: claims.orgId })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(claims.userId)
      .setIssuer('cvtrain')
      .setAudience('cvtrain-api')
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('not the server secret, but long enough to sign'));
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const algNone = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: claims.userId, org: claims.orgId, iss: 'cvtrain', aud: 'cvtrain-api', exp: 9_999_999_999 })}.`;
    const wrongSecret = revoked.secret.replace(/_[^_]+$/, `_${'A'.repeat(43)}`);
    const payloads: unknown[] = [
      undefined,
      {},
      { authorization: 42 },
      { authorization: 'Bearer ' },
      { authorization: 'Bearer not-a-token' },
      { authorization: `Bearer ${forged}` },
      { authorization: `Bearer ${algNone}` },
      { authorization: `Bearer ${expired}` },
      { authorization: `Bearer ${revoked.secret}` },
      { authorization: `Bearer ${wrongSecret}` },
    ];
    const sockets: Raw[] = [];
    for (let i = 0; i < 200; i += 50) sockets.push(...(await Promise.all(Array.from({ length: 50 }, () => openRaw()))));
    const sentAt = Date.now();
    sockets.forEach((s, i) => sendInit(s, payloads[i % payloads.length]));
    const closes = await Promise.all(sockets.map((s) => closedWithin(s, 3000)));
    for (const s of sockets) s.ws.terminate();

    const stillOpen = closes.filter((c) => c === null).length;
    expect(stillOpen).toBe(0);
    expect(new Set(closes.map((c) => c!.code))).toEqual(new Set([4401]));
    expect(Math.max(...closes.map((c) => c!.at - sentAt))).toBeLessThan(2000);
    expect(sockets.flatMap((s) => s.messages.map((m) => m.type))).toEqual([]);
  });

  it(`a socket that never sends connection_init is closed with 4408 after CVTRAIN_WS_INIT_TIMEOUT_MS (${CAPS.initTimeoutMs} ms here)`, async () => {
    const openedAt = Date.now();
    const sockets = await Promise.all(Array.from({ length: 20 }, () => openRaw()));
    const closes = await Promise.all(sockets.map((s) => closedWithin(s, CAPS.initTimeoutMs + 3000)));
    for (const s of sockets) s.ws.terminate();
    expect(closes.filter((c) => c === null)).toHaveLength(0);
    expect(new Set(closes.map((c) => c!.code))).toEqual(new Set([4408]));
    for (const c of closes) {
      expect(c!.at - openedAt).toBeGreaterThanOrEqual(CAPS.initTimeoutMs - 50);
      expect(c!.at - openedAt).toBeLessThan(CAPS.initTimeoutMs + 1000);
    }
  });
});

describe('live connections end with their credentials', () => {
  it('revoking an API key closes its sockets with 4401 within a second, on every API replica, and their subscriptions stop', async () => {
    // A second API process on the same database and Redis, as replicas behind a load balancer.
    const app2 = createApp(api.app.config, api.orm, api.app.sql);
    const replica: RunningServer = await startServer(app2, { port: 0, host: '127.0.0.1' });
    try {
      const key = await createKey('watcher');
      const other = await createKey('bystander');
      const before = [nodeSubscribers(), nodeSubscribers(app2)];
      const watchers = [watchNodes(key.secret), watchNodes(key.secret, replica.url)];
      const bystander = watchNodes(other.secret);
      expect(await waitFor(() => nodeSubscribers() === before[0] + 2 && nodeSubscribers(app2) === before[1] + 1, 5000)).toBe(true);
      await expectDelivering([...watchers, bystander], 'before-revoke');

      const revokedAt = Date.now();
      await revokeKey(key.apiKey.id);
      expect(await waitFor(() => watchers.every((w) => w.closed() !== null), 1000)).toBe(true);
      for (const w of watchers) {
        expect(w.closed()!.code).toBe(4401);
        expect(w.closed()!.at - revokedAt).toBeLessThan(1000);
      }
      // The server side of each subscription ended too (not only the client's socket).
      expect(await waitFor(() => nodeSubscribers() === before[0] + 1 && nodeSubscribers(app2) === before[1], 1000)).toBe(true);
      const counts = watchers.map((w) => w.received.length);
      await expectDelivering([bystander], 'after-revoke');
      expect(watchers.map((w) => w.received.length)).toEqual(counts);
      expect(bystander.closed()).toBeNull();

      // And the key cannot connect again.
      const again = await connectRaw(key.secret);
      expect(again.acked).toBe(false);
      expect((await again.closed).code).toBe(4401);
      await Promise.all([...watchers, bystander].map((w) => w.client.dispose()));
    } finally {
      await replica.close();
      await app2.close();
    }
  });

  it('removing a member closes their sockets in that organization with 4403 within a second, and their subscriptions stop', async () => {
    const member = await signUp(api, 'Member home');
    ok(
      await api.gql(
        'mutation($input: AddMemberInput!) { addMember(input: $input) { __typename ... on AddMemberSuccess { membership { role } } } }',
        { input: { email: member.email, role: 'MEMBER' } },
        owner.token,
      ),
      'addMember',
      'membership',
    );
    const signedIn = ok<{ token: string }>(
      await api.gql(
        'mutation($input: SignInInput!) { signIn(input: $input) { __typename ... on SignInSuccess { authPayload { token } } } }',
        { input: { email: member.email, password: member.password, organizationId: owner.orgId } },
      ),
      'signIn',
      'authPayload',
    );
    const before = nodeSubscribers();
    const inOwnersOrg = watchNodes(signedIn.token);
    // The same person in their own organization keeps their membership there.
    const inOwnOrg = watchNodes(member.token);
    expect(await waitFor(() => nodeSubscribers() === before + 2, 5000)).toBe(true);
    await expectDelivering([inOwnersOrg, inOwnOrg], 'before-removal');

    const removedAt = Date.now();
    ok(
      await api.gql(
        'mutation($id: ID!) { removeMember(userId: $id) { __typename ... on RemoveMemberSuccess { membership { role } } } }',
        { id: member.userId },
        owner.token,
      ),
      'removeMember',
      'membership',
    );
    expect(await waitFor(() => inOwnersOrg.closed() !== null, 1000)).toBe(true);
    expect(inOwnersOrg.closed()!.code).toBe(4403);
    expect(inOwnersOrg.closed()!.at - removedAt).toBeLessThan(1000);
    expect(await waitFor(() => nodeSubscribers() === before + 1, 1000)).toBe(true);
    const count = inOwnersOrg.received.length;
    await expectDelivering([inOwnOrg], 'after-removal');
    expect(inOwnersOrg.received.length).toBe(count);
    expect(inOwnOrg.closed()).toBeNull();

    const again = await connectRaw(signedIn.token);
    expect(again.acked).toBe(false);
    expect((await again.closed).code).toBe(4401);
    await Promise.all([inOwnersOrg.client.dispose(), inOwnOrg.client.dispose()]);
    // Its server-side end is asynchronous; the next test counts subscribers from a settled state.
    expect(await waitFor(() => nodeSubscribers() === before, 2000)).toBe(true);
  });

  it('a session token expiring closes its sockets with 4401 within a second of its exp, and the subscription stops', async () => {
    const claims = { userId: localId(owner.userId), orgId: localId(owner.orgId) };
    // Signed as signIn signs, with a lifetime of 3 s instead of CVTRAIN_JWT_TTL_S.
    const { token } = await signSessionToken(claims, api.app.config.jwtSecret, 3);
    const expMs = decodeJwt(token).exp! * 1000;
    const before = nodeSubscribers();
    const watcher = watchNodes(token);
    expect(await waitFor(() => nodeSubscribers() === before + 1, 2000)).toBe(true);
    await expectDelivering([watcher], 'before-expiry');
    expect(watcher.closed()).toBeNull();

    expect(await waitFor(() => watcher.closed() !== null, expMs - Date.now() + 1000)).toBe(true);
    expect(watcher.closed()!.code).toBe(4401);
    expect(watcher.closed()!.at).toBeGreaterThanOrEqual(expMs - 50);
    expect(watcher.closed()!.at - expMs).toBeLessThan(1000);
    expect(await waitFor(() => nodeSubscribers() === before, 1000)).toBe(true);
    await watcher.client.dispose();
  });

  it('a client leaving ends its server-side subscription at once, not at the next event', async () => {
    const before = nodeSubscribers();
    const watchers = [watchNodes(owner.token), watchNodes(owner.token)];
    expect(await waitFor(() => nodeSubscribers() === before + 2, 5000)).toBe(true);
    // No node event is published from here on: the streams wait for a message that never comes.
    const [completes, closes] = watchers;
    await completes.client.dispose(); // completes its operation, then closes
    const raw = await connectRaw(owner.token);
    raw.ws.send(JSON.stringify({ id: 'x', type: 'subscribe', payload: { query: NODES } }));
    expect(await waitFor(() => nodeSubscribers() === before + 2, 2000)).toBe(true);
    raw.ws.send(JSON.stringify({ id: 'x', type: 'complete' }));
    expect(await waitFor(() => nodeSubscribers() === before + 1, 1000)).toBe(true);
    raw.ws.terminate(); // a lost network: no close handshake
    await closes.client.dispose();
    expect(await waitFor(() => nodeSubscribers() === before, 1000)).toBe(true);
  });

  it('a credential revoked without a signal (plain SQL) is caught by the sweep every CVTRAIN_SUBSCRIPTION_REAUTH_MS', async () => {
    // A replica sweeping every 300 ms; the key is revoked behind the API's back, so no signal is sent.
    const app2 = createApp({ ...api.app.config, subscriptionReauthMs: 300 }, api.orm, api.app.sql);
    const replica = await startServer(app2, { port: 0, host: '127.0.0.1' });
    try {
      const key = await createKey('revoked in SQL');
      const watcher = watchNodes(key.secret, replica.url);
      expect(await waitFor(() => nodeSubscribers(app2) === 1, 5000)).toBe(true);
      const revokedAt = Date.now();
      await api.app.sql.query('update api_keys set revoked_at = now() where id = ?', [localId(key.apiKey.id)]);
      expect(await waitFor(() => watcher.closed() !== null, 1500)).toBe(true);
      expect(watcher.closed()!.code).toBe(4401);
      expect(watcher.closed()!.at - revokedAt).toBeLessThan(1500);
      expect(await waitFor(() => nodeSubscribers(app2) === 0, 1000)).toBe(true);
      await watcher.client.dispose();
    } finally {
      await replica.close();
      await app2.close();
    }
  });
});

describe('caps', () => {
  it(`connections per user: the one over CVTRAIN_WS_MAX_CONNECTIONS_PER_USER (${CAPS.perUser} here) is closed with 4429 and a reason; closing one makes room`, async () => {
    const user = await signUp(api, 'Many tabs');
    const open = await Promise.all(Array.from({ length: CAPS.perUser }, () => connectRaw(user.token)));
    expect(open.map((s) => s.acked)).toEqual(Array(CAPS.perUser).fill(true));
    const over = await connectRaw(user.token);
    expect(over.acked).toBe(false);
    const closed = await over.closed;
    expect(closed.code).toBe(4429);
    expect(closed.reason).toMatch(new RegExp(`at most ${CAPS.perUser} .*per user`));
    // Another user is not affected.
    const other = await connectRaw(owner.token);
    expect(other.acked).toBe(true);

    open[0].ws.close();
    await open[0].closed;
    let room = false;
    for (let i = 0; i < 20 && !room; i++) {
      const next = await connectRaw(user.token);
      room = next.acked;
      if (!room) await sleep(50);
      else next.ws.close();
    }
    expect(room).toBe(true);
    for (const s of [...open, other]) s.ws.close();
  });

  it(`connections per API key: the one over CVTRAIN_WS_MAX_CONNECTIONS_PER_API_KEY (${CAPS.perKey} here) is closed with 4429 and a reason`, async () => {
    const key = await createKey('many workers');
    const open = await Promise.all(Array.from({ length: CAPS.perKey }, () => connectRaw(key.secret)));
    expect(open.map((s) => s.acked)).toEqual(Array(CAPS.perKey).fill(true));
    const over = await connectRaw(key.secret);
    expect(over.acked).toBe(false);
    const closed = await over.closed;
    expect(closed.code).toBe(4429);
    expect(closed.reason).toMatch(new RegExp(`at most ${CAPS.perKey} .*per API key`));
    // Another key of the same organization has its own allowance.
    const otherKey = await createKey('another worker');
    const other = await connectRaw(otherKey.secret);
    expect(other.acked).toBe(true);
    for (const s of [...open, other]) s.ws.close();
  });

  it(`subscriptions per connection: over CVTRAIN_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION (${CAPS.perConnection} here) an operation gets LIMIT_EXCEEDED, the others keep running`, async () => {
    const client = createClient({
      url: wsUrl(api.url),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${owner.token}` },
      retryAttempts: 0,
    });
    const before = nodeSubscribers();
    const noop = { next: () => undefined, error: () => undefined, complete: () => undefined };
    const stops = Array.from({ length: CAPS.perConnection }, () => client.subscribe({ query: NODES }, noop));
    expect(await waitFor(() => nodeSubscribers() === before + CAPS.perConnection, 5000)).toBe(true);

    const refused = await Promise.race([
      new Promise<unknown>((resolve) =>
        client.subscribe({ query: NODES }, { next: () => undefined, error: resolve, complete: () => resolve('complete') }),
      ),
      sleep(3000).then(() => 'still running after 3 s'),
    ]);
    expect(Array.isArray(refused)).toBe(true);
    const [error] = refused as { message: string; extensions?: Record<string, unknown> }[];
    expect(error.extensions?.code).toBe('LIMIT_EXCEEDED');
    expect(error.message).toMatch(new RegExp(`at most ${CAPS.perConnection}`));
    expect(nodeSubscribers()).toBe(before + CAPS.perConnection);

    // Completing one makes room for another.
    stops[0]();
    expect(await waitFor(() => nodeSubscribers() === before + CAPS.perConnection - 1, 2000)).toBe(true);
    client.subscribe({ query: NODES }, noop);
    expect(await waitFor(() => nodeSubscribers() === before + CAPS.perConnection, 2000)).toBe(true);
    await client.dispose();
    expect(await waitFor(() => nodeSubscribers() === before, 2000)).toBe(true);
  });

  it('a flood of 300 subscribe messages on one raw socket starts only the capped number; every other one is refused with LIMIT_EXCEEDED', async () => {
    const raw = await connectRaw(owner.token);
    expect(raw.acked).toBe(true);
    const before = nodeSubscribers();
    for (let i = 0; i < 300; i++) {
      raw.ws.send(JSON.stringify({ id: String(i), type: 'subscribe', payload: { query: NODES } }));
    }
    const refusals = () => raw.messages.filter((m) => m.type === 'error' && m.payload?.[0]?.extensions?.code === 'LIMIT_EXCEEDED');
    expect(await waitFor(() => refusals().length === 300 - CAPS.perConnection, 5000)).toBe(true);
    expect(await waitFor(() => nodeSubscribers() === before + CAPS.perConnection, 2000)).toBe(true);
    expect(raw.messages.filter((m) => m.type === 'error')).toHaveLength(300 - CAPS.perConnection);
    raw.ws.close();
    await raw.closed;
    expect(await waitFor(() => nodeSubscribers() === before, 2000)).toBe(true);
  });
});
