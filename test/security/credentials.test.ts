// Hostile client, credentials: revoked and guessed API keys, forged session tokens (wrong secret,
// alg "none", a payload altered under the old signature, another organization's id under the
// wrong key, another algorithm, issuer or audience), expired and not-yet-valid tokens, and
// malformed Authorization headers are refused over HTTP and over graphql-ws. Refused means: over
// HTTP, acting as nobody (viewer null, UNAUTHENTICATED, AuthenticationError) or a 401, never a
// 5xx and never a write; over the websocket, the socket closed with 4401/4403 or the operation
// refused with an authentication error, and never any data.
import { HTTP_SUBSCRIPTION_REFUSED } from '../../src/graphql/http-subscriptions.js';
import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { signSessionToken } from '../../src/modules/orgs/credentials.js';
import { signUp, startTestApi, type SignedUp, type TestApi } from '../helpers/api.js';
import {
  RESULT,
  SUITE_ENV,
  RESULT_ID,
  bearer,
  localOf,
  newKey,
  newSession,
  orgRows,
  q,
  seedOrg,
  sseRun,
  unique,
  wsClient,
  wsRun,
  type OrgFixture,
  type WsEvent,
} from '../helpers/hostile.js';

let api: TestApi;
let F: OrgFixture;
let other: SignedUp;
let session: string;

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

async function jwt(
  claims: { sub: string; org: string },
  opts: { secret?: Uint8Array; alg?: string; iss?: string; aud?: string; exp?: number | null; nbf?: number } = {},
) {
  let t = new SignJWT({ org: claims.org })
    .setProtectedHeader({ alg: opts.alg ?? 'HS256', typ: 'JWT' })
    .setSubject(claims.sub)
    .setIssuer(opts.iss ?? 'cvtrain')
    .setAudience(opts.aud ?? 'cvtrain-api')
    .setIssuedAt(now() - 10);
  if (opts.exp !== null) t = t.setExpirationTime(opts.exp ?? now() + 3600);
  if (opts.nbf !== undefined) t = t.setNotBefore(opts.nbf);
  return t.sign(opts.secret ?? api.app.config.jwtSecret);
}

/** Every bad credential, as the value of the Authorization header (or of connectionParams.authorization). */
let BAD: [string, string][];

const CREATE = `mutation($input: CreateModelInput!) { createModel(input: $input) { ${RESULT} ... on CreateModelSuccess { model { id } } } }`;
const modelInput = () => ({ input: { name: unique('intruder'), task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn' } });

beforeAll(async () => {
  api = await startTestApi({ env: SUITE_ENV });
  F = await seedOrg(api, 'Creds');
  other = await signUp(api, unique('Other'));
  session = F.session;
  const secret = api.app.config.jwtSecret;
  const wrongSecret = new Uint8Array(randomBytes(32));
  const me = { sub: localOf(F.owner.userId), org: localOf(F.owner.orgId) };
  const good = F.owner.token;
  const [header, payload, signature] = good.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());

  const revoked = await newKey(api, F.owner.token, 'OWNER');
  ok2(await api.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { ${RESULT_ID} } }`, { id: revoked.id }, F.owner.token), 'revokeApiKey');
  const live = F.key.secret;
  const [, keyHex, keySecret] = /^cvt_([0-9a-f]{32})_(.+)$/.exec(live)!;
  const flip = (s: string) => s.slice(0, -1) + (s.endsWith('A') ? 'B' : 'A');

  // A member whose membership is gone: their token is well signed and unexpired.
  const leaver = await signUp(api, unique('leaver home'));
  ok2(await api.gql(q.addMember, { input: { email: leaver.email, role: 'ADMIN' } }, F.owner.token), 'addMember');
  const leaverToken = (await signSessionToken({ userId: localOf(leaver.userId), orgId: localOf(F.owner.orgId) }, secret, 3600)).token;
  ok2(await api.gql(`mutation($id: ID!) { removeMember(userId: $id) { ${RESULT_ID} } }`, { id: leaver.userId }, F.owner.token), 'removeMember');

  BAD = [
    ['a revoked API key', `Bearer ${revoked.secret}`],
    ["a live key's id with another secret", `Bearer cvt_${keyHex}_${randomBytes(32).toString('base64url')}`],
    ["a live key with one character of its secret changed", `Bearer cvt_${keyHex}_${flip(keySecret)}`],
    ['a live key with its id upper-cased', `Bearer cvt_${keyHex.toUpperCase()}_${keySecret}`],
    ['a well-formed key that was never issued', `Bearer cvt_${randomBytes(16).toString('hex')}_${randomBytes(32).toString('base64url')}`],
    ['a session token signed with another secret', `Bearer ${await jwt(me, { secret: wrongSecret })}`],
    ["another organization's id, signed with another secret", `Bearer ${await jwt({ sub: localOf(other.userId), org: localOf(other.orgId) }, { secret: wrongSecret })}`],
    ['alg "none", no signature', `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${payload}.`],
    ['alg "none" with the valid signature kept', `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${payload}.${signature}`],
    ["the payload altered to another organization, the old signature kept", `Bearer ${header}.${b64({ ...claims, org: localOf(other.orgId) })}.${signature}`],
    ["the payload altered to another user, the old signature kept", `Bearer ${header}.${b64({ ...claims, sub: localOf(other.userId) })}.${signature}`],
    ['the payload with a later expiry, the old signature kept', `Bearer ${header}.${b64({ ...claims, exp: claims.exp + 86_400 * 365 })}.${signature}`],
    ['the signature cut off', `Bearer ${header}.${payload}`],
    ['expired an hour ago (the right secret)', `Bearer ${await jwt(me, { exp: now() - 3600 })}`],
    ['not valid before an hour from now', `Bearer ${await jwt(me, { nbf: now() + 3600 })}`],
    ['no expiry at all', `Bearer ${await jwt(me, { exp: null })}`],
    ['HS512 with the right secret', `Bearer ${await jwt(me, { alg: 'HS512' })}`],
    ['another issuer, the right secret', `Bearer ${await jwt(me, { iss: 'someone-else' })}`],
    ['another audience, the right secret', `Bearer ${await jwt(me, { aud: 'cvtrain-ingest' })}`],
    ["well signed, for an organization the user is not a member of", `Bearer ${await jwt({ sub: me.sub, org: localOf(other.orgId) })}`],
    ['well signed, for a member who was removed', `Bearer ${leaverToken}`],
    ["the gpu-nodes' join token", `Bearer ${api.app.config.nodeToken}`],
    ['"Bearer" and nothing else', 'Bearer'],
    ['"Bearer null"', 'Bearer null'],
    ['Basic with the OWNER\'s email and password', `Basic ${Buffer.from(`${F.owner.email}:${F.owner.password}`).toString('base64')}`],
    ['a valid token under another scheme', `Token ${good}`],
    ['a valid token without a scheme', good],
    ['a valid token followed by more', `Bearer ${good} ${good}`],
    ['a valid token with a character appended', `Bearer ${good}x`],
    ['a valid key with a character appended', `Bearer ${live}x`],
    ['8 KB of garbage', `Bearer ${'A'.repeat(8192)}`],
  ];
}, 120_000);
afterAll(() => api?.close());

function ok2(res: { data: any; errors?: unknown }, field: string) {
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  expect(res.data[field].__typename, JSON.stringify(res.data[field])).toMatch(/Success$/);
}

async function post(authorization: string | null, query: string, variables: Record<string, unknown> = {}) {
  const res = await fetch(api.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      ...(authorization !== null ? { authorization } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  const text = await res.text();
  let body: { data?: any; errors?: { message: string; extensions?: { code?: string } }[] } = {};
  try {
    body = JSON.parse(text);
  } catch {
    /* a refusal before GraphQL (401, 431) may have no JSON body */
  }
  return { status: res.status, body, text };
}

/** Why an HTTP answer is not a refusal, or null. */
function httpProblem(r: Awaited<ReturnType<typeof post>>, expectData: (data: any) => boolean): string | null {
  if (r.status >= 500) return `HTTP ${r.status}: ${r.text.slice(0, 300)}`;
  if (r.status === 401 || r.status === 403 || r.status === 431) return null;
  if (r.status !== 200) return `HTTP ${r.status}: ${r.text.slice(0, 300)}`;
  return expectData(r.body) ? null : `not refused: ${r.text.slice(0, 300)}`;
}

describe('over HTTP', () => {
  it('the valid credentials work (positive control)', async () => {
    for (const token of [F.owner.token, F.key.secret]) {
      const r = await post(`Bearer ${token}`, '{ viewer { role organization { id } } models { totalCount } }');
      expect(r.body.data.viewer).toEqual({ role: 'OWNER', organization: { id: F.owner.orgId } });
      expect(r.body.data.models.totalCount).toBeGreaterThan(0);
    }
  });

  it('every bad credential acts as nobody: no caller, no data, no write, never a 5xx', async () => {
    const failures: string[] = [];
    const before = await orgRows(api, F);
    const otherModels = async () => (await api.app.sql.query<{ n: string }>(`select count(*) as n from models where organization_id = ?`, [localOf(other.orgId)]))[0].n;
    const otherBefore = await otherModels();
    for (const [label, authorization] of BAD) {
      const viewer = httpProblem(await post(authorization, '{ viewer { role organization { id } } }'), (b) => b.data?.viewer === null && !b.errors);
      const models = httpProblem(
        await post(authorization, '{ models(includeArchived: true) { totalCount edges { node { id name } } } }'),
        (b) => (b.data?.models ?? null) === null && b.errors?.[0]?.extensions?.code === 'UNAUTHENTICATED',
      );
      const create = httpProblem(await post(authorization, CREATE, modelInput()), (b) => b.data?.createModel?.__typename === 'AuthenticationError');
      for (const [what, p] of [['viewer', viewer], ['models', models], ['createModel', create]] as const) {
        if (p) failures.push(`${label}: ${what}: ${p}`);
      }
    }
    expect(failures).toEqual([]);
    expect(await orgRows(api, F)).toEqual(before);
    expect(await otherModels()).toBe(otherBefore);
  });

  it('an Authorization header over the server\'s header limit is refused before anything runs', async () => {
    const r = await post(`Bearer ${'A'.repeat(64 * 1024)}`, '{ viewer { role } }').catch((err: Error) => ({ status: 0, body: {}, text: String(err) }));
    // Node's 16 KB header limit answers 431, or the connection is dropped; never data, never 5xx.
    expect([0, 400, 413, 431]).toContain(r.status);
  });
});

// --- Over graphql-ws -------------------------------------------------------------------------------

const SUBSCRIBE_SESSION = 'subscription($id: ID!) { trainingSessionUpdated(id: $id) { id status } }';
const SUBSCRIBE_NODES = 'subscription { gpuNodeUpdated { id status } }';
const QUERY_MODELS = '{ models(includeArchived: true) { totalCount } }';

/**
 * Why what a websocket operation received is not a refusal, or null. Refusals: the socket closed
 * with 4401 or 4403, or an error coded UNAUTHENTICATED (or FORBIDDEN), or a typed
 * AuthenticationError result. Any data otherwise is a failure.
 */
function wsProblem(events: WsEvent[]): string | null {
  let refused = false;
  for (const e of events) {
    if (e === 'complete') continue;
    if ('closed' in e) {
      if (![4401, 4403].includes(e.closed.code)) return `closed with ${e.closed.code} ${e.closed.reason}`;
      refused = true;
    } else if ('error' in e) {
      const codes = e.error.map((x) => x.extensions?.code);
      if (!codes.every((c) => c === 'UNAUTHENTICATED' || c === 'FORBIDDEN')) return `error ${JSON.stringify(e.error)}`;
      refused = true;
    } else {
      const data = e.next.data as Record<string, any> | null | undefined;
      for (const [field, value] of Object.entries(data ?? {})) {
        if (value !== null && value?.__typename !== 'AuthenticationError') return `data ${field}: ${JSON.stringify(value)}`;
        if (value?.__typename === 'AuthenticationError') refused = true;
      }
      const codes = (e.next.errors ?? []).map((x: { extensions?: { code?: string } }) => x.extensions?.code);
      if (codes.length && !codes.every((c: string | undefined) => c === 'UNAUTHENTICATED' || c === 'FORBIDDEN')) return `errors ${JSON.stringify(e.next.errors)}`;
      if (codes.length) refused = true;
    }
  }
  return refused ? null : `no refusal: ${JSON.stringify(events)}`;
}

/** Each operation a hostile socket tries, on one connection (a server that closes it ends them all). */
async function tryAll(connectionParams: Record<string, unknown> | null, headers?: Record<string, string>): Promise<string[]> {
  const problems: string[] = [];
  const ops: [string, string, Record<string, unknown>][] = [
    ['trainingSessionUpdated', SUBSCRIBE_SESSION, { id: session }],
    ['gpuNodeUpdated', SUBSCRIBE_NODES, {}],
    ['models', QUERY_MODELS, {}],
    ['createModel', CREATE, modelInput()],
  ];
  for (const [name, query, variables] of ops) {
    // A fresh socket each: one the server closed cannot run the next operation.
    const client = headers
      ? wsClientWithHeaders(connectionParams, headers)
      : wsClient(api, connectionParams);
    try {
      const events = await wsRun(client, query, variables, { waitMs: 3_000 });
      const p = wsProblem(events);
      if (p) problems.push(`${name}: ${p}`);
    } finally {
      await client.dispose();
    }
  }
  return problems;
}

function wsClientWithHeaders(connectionParams: Record<string, unknown> | null, headers: Record<string, string>) {
  class WithHeaders extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols, { headers });
    }
  }
  return wsClient(api, connectionParams, [], WithHeaders);
}

describe('subscriptions over Server-Sent Events', () => {
  it('valid credentials get the transport refusal (no data), every bad one is refused with no data', async () => {
    // Subscriptions are refused over SSE whoever asks (test/security/http-subscriptions.test.ts).
    const own = await sseRun(api, `Bearer ${F.key.secret}`, SUBSCRIBE_SESSION, { id: session }, { until: (e) => e.length > 0 });
    expect(own[0]).toMatchObject({ next: { errors: [{ message: HTTP_SUBSCRIPTION_REFUSED }] } });
    expect(own[0]).not.toHaveProperty('next.data');
    const failures: string[] = [];
    for (const [label, authorization] of [...BAD, ['no Authorization header', null] as [string, null]]) {
      for (const [name, query, variables] of [['trainingSessionUpdated', SUBSCRIBE_SESSION, { id: session }], ['gpuNodeUpdated', SUBSCRIBE_NODES, {}]] as const) {
        const events = await sseRun(api, authorization, query, variables);
        // An HTTP refusal (401/403) before the stream starts is a refusal too.
        const refusedByStatus = events.length === 1 && typeof events[0] === 'object' && 'closed' in events[0] && [401, 403].includes(events[0].closed.code);
        // So is the transport's refusal, which comes before any credential is looked at.
        const refusedTransport =
          JSON.stringify(events[0]) === JSON.stringify({ next: { errors: [{ message: HTTP_SUBSCRIPTION_REFUSED, extensions: { code: 'BAD_REQUEST' } }] } }) &&
          !JSON.stringify(events).includes('"data"');
        const p = refusedByStatus || refusedTransport ? null : wsProblem(events);
        if (p) failures.push(`${label}: ${name}: ${p}`);
      }
    }
    expect(failures).toEqual([]);
  });
});

describe('over graphql-ws', () => {
  it('the valid credentials get data (positive control)', async () => {
    for (const token of [F.owner.token, F.key.secret]) {
      const client = wsClient(api, bearer(token));
      try {
        const events = await wsRun(client, SUBSCRIBE_SESSION, { id: session }, { until: (e) => e.length > 0 });
        expect(events[0]).toEqual({ next: { data: { trainingSessionUpdated: { id: session, status: 'QUEUED' } } } });
        const models = await wsRun(client, QUERY_MODELS, {});
        expect((models[0] as { next: { data: any } }).next.data.models.totalCount).toBeGreaterThan(0);
      } finally {
        await client.dispose();
      }
    }
  });

  it('every bad credential in connection_init is refused, and gets no data', async () => {
    const before = await orgRows(api, F);
    const failures: string[] = [];
    for (const [label, authorization] of BAD) {
      for (const p of await tryAll({ authorization })) failures.push(`${label}: ${p}`);
    }
    expect(failures).toEqual([]);
    expect(await orgRows(api, F)).toEqual(before);
  });

  it.each([
    ['no connectionParams', null],
    ['empty connectionParams', {}],
    ['authorization as a number', { authorization: 12345 }],
    ['authorization as an object', { authorization: { token: 'cvt_x' } }],
    ['authorization as a list', { authorization: ['Bearer x', 'Bearer y'] }],
    ['a token under another key', { token: 'Bearer cvt_00000000000000000000000000000000_not-a-real-key-at-all-not-a-real-key-0123' }],
  ] as [string, Record<string, unknown> | null][])('malformed connectionParams: %s', async (_label, params) => {
    expect(await tryAll(params)).toEqual([]);
  });

  it("a bad token in the upgrade request's Authorization header grants nothing either", async () => {
    expect(await tryAll(null, { authorization: BAD[0][1] })).toEqual([]);
  });

  it('a key revoked while its socket is open: a new operation on that socket is refused', async () => {
    const key = await newKey(api, F.owner.token, 'ADMIN');
    const closes: { code: number; reason: string }[] = [];
    const client = wsClient(api, bearer(key.secret), closes);
    try {
      const first = await wsRun(client, SUBSCRIBE_SESSION, { id: session }, { until: (e) => e.length > 0 });
      expect(first[0]).toHaveProperty('next.data.trainingSessionUpdated.id', session);
      ok2(await api.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { ${RESULT_ID} } }`, { id: key.id }, F.owner.token), 'revokeApiKey');
      for (const [query, variables] of [[SUBSCRIBE_SESSION, { id: session }], [QUERY_MODELS, {}], [CREATE, modelInput()]] as const) {
        const events = await wsRun(client, query, variables, { waitMs: 3_000 });
        // The socket may already be closed by then (4401/4403): that is a refusal too.
        const problem = events.length === 0 && closes.some((c) => [4401, 4403].includes(c.code)) ? null : wsProblem(events);
        expect(problem, query).toBeNull();
      }
    } finally {
      await client.dispose();
    }
  });

  it('a session token that expires while its socket is open: a new operation after expiry is refused', async () => {
    const { token } = await signSessionToken({ userId: localOf(F.owner.userId), orgId: localOf(F.owner.orgId) }, api.app.config.jwtSecret, 2);
    const closes: { code: number; reason: string }[] = [];
    const client = wsClient(api, bearer(token), closes);
    try {
      const first = await wsRun(client, QUERY_MODELS, {});
      expect((first[0] as { next: { data: any } }).next.data.models.totalCount).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 3_100));
      for (const [query, variables] of [[SUBSCRIBE_SESSION, { id: session }], [QUERY_MODELS, {}]] as const) {
        const events = await wsRun(client, query, variables, { waitMs: 3_000 });
        const problem = events.length === 0 && closes.some((c) => [4401, 4403].includes(c.code)) ? null : wsProblem(events);
        expect(problem, query).toBeNull();
      }
      // And over HTTP.
      const r = await post(`Bearer ${token}`, QUERY_MODELS);
      expect(httpProblem(r, (b) => b.errors?.[0]?.extensions?.code === 'UNAUTHENTICATED')).toBeNull();
    } finally {
      await client.dispose();
    }
  });

  it("a session created after the key's revocation is still not reachable with it", async () => {
    // Guards the per-request principal cache: new data must not reach an old, revoked credential.
    const key = await newKey(api, F.owner.token, 'VIEWER');
    expect((await api.gql('{ viewer { role } }', {}, key.secret)).data.viewer).toEqual({ role: 'VIEWER' });
    ok2(await api.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { ${RESULT_ID} } }`, { id: key.id }, F.owner.token), 'revokeApiKey');
    const fresh = await newSession(api, F);
    const r = await post(`Bearer ${key.secret}`, 'query($id: ID!) { trainingSession(id: $id) { id } node(id: $id) { id } }', { id: fresh });
    expect(httpProblem(r, (b) => !b.data?.trainingSession && !b.data?.node)).toBeNull();
    expect(await tryAll({ authorization: `Bearer ${key.secret}` })).toEqual([]);
  });
});
