// Finding 7 of the hostile-client probes: sign-in answered every one of 2,000 wrong passwords,
// each with ~50-120 ms of scrypt CPU, and nothing limited how fast one caller could send requests.
// Sign-in and sign-up are throttled per client address and per account; every GraphQL request and
// websocket operation per user, per API key and (without credentials) per address. Small limits
// here so that refills take a second, not minutes.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { createClient, type Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config.js';
import { addressBucket, LeasedBuckets, RateLimits, TokenBuckets } from '../../src/lib/rate-limit.js';
import { hashPassword } from '../../src/modules/orgs/credentials.js';
import { ok, signUp, startTestApi, testSecrets, type SignedUp, type TestApi } from '../helpers/api.js';
import { freePort } from '../helpers/processes.js';

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: any;
}

// Keep-alive for the many requests that need no address of their own.
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 25 });
afterAll(() => keepAlive.destroy());

/** A POST, from a chosen local address if given (any 127.x.y.z reaches the server on 127.0.0.1). */
function post(
  url: string,
  body: object,
  opts: { token?: string; from?: string; headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        localAddress: opts.from,
        agent: opts.from ? false : keepAlive,
        headers: {
          'content-type': 'application/json',
          accept: 'application/graphql-response+json, application/json',
          'content-length': Buffer.byteLength(payload),
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
          ...opts.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode!, headers: res.headers, body: text ? JSON.parse(text) : null });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const SIGN_IN = `mutation($input: SignInInput!) { signIn(input: $input) { __typename
  ... on LimitExceededError { limit maximum retryAfterSeconds message }
  ... on SignInSuccess { authPayload { token } } } }`;
const SIGN_UP = `mutation($input: SignUpInput!) { signUp(input: $input) { __typename
  ... on LimitExceededError { limit retryAfterSeconds } } }`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const randomEmail = () => `rl-${randomBytes(4).toString('hex')}@example.com`;
const randomIp = () => `10.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}.${1 + Math.floor(Math.random() * 250)}`;

describe('sign-in and sign-up throttling', () => {
  // Behind one trusted proxy, so each test can come from addresses of its own (X-Forwarded-For).
  const ACCOUNT_BURST = 5;
  const ADDRESS_BURST = 10;
  // Half a token a second: a retry waits about 2 s.
  const PER_MIN = 30;
  let api: TestApi;
  let alice: SignedUp;
  const signIn = (email: string, password: string, from: string) =>
    post(api.url, { query: SIGN_IN, variables: { input: { email, password } } }, { headers: { 'x-forwarded-for': from } });

  beforeAll(async () => {
    api = await startTestApi({
      env: {
        CVTRAIN_TRUST_PROXY: '1',
        CVTRAIN_AUTH_ACCOUNT_BURST: String(ACCOUNT_BURST),
        CVTRAIN_AUTH_ACCOUNT_PER_MIN: String(PER_MIN),
        CVTRAIN_AUTH_ADDRESS_BURST: String(ADDRESS_BURST),
        CVTRAIN_AUTH_ADDRESS_PER_MIN: String(PER_MIN),
        // Thousands of anonymous requests from one address: the request limit is not under test here.
        CVTRAIN_ANON_RATE_LIMIT_RPS: '0',
      },
    });
    alice = await signUp(api, 'Throttled');
  });
  afterAll(() => api?.close());

  it('2,000 wrong passwords: only the first few cost scrypt, the rest get LimitExceededError with a retry time and Retry-After', async () => {
    const started = performance.now();
    await hashPassword('one scrypt, to know what it costs here');
    const scryptMs = performance.now() - started;

    const from = randomIp();
    const cpuBefore = process.cpuUsage();
    const t0 = performance.now();
    const counts: Record<string, number> = {};
    const refused: RawResponse[] = [];
    let checked = 0;
    for (let sent = 0; sent < 2000; sent += 25) {
      const batch = await Promise.all(
        Array.from({ length: 25 }, () => signIn(alice.email, `wrong password ${randomBytes(4).toString('hex')}`, from)),
      );
      for (const res of batch) {
        expect(res.status).toBe(200);
        const type = res.body.data.signIn.__typename as string;
        counts[type] = (counts[type] ?? 0) + 1;
        if (type === 'AuthenticationError') checked++;
        else refused.push(res);
      }
      // The account's bucket bounds the attempts whose password was checked.
      const allowed = ACCOUNT_BURST + Math.ceil(((performance.now() - t0) / 60_000) * PER_MIN) + 1;
      expect(checked, `password checked ${checked} times after ${sent + 25} attempts`).toBeLessThanOrEqual(allowed);
    }
    const cpuMs = (() => {
      const u = process.cpuUsage(cpuBefore);
      return (u.user + u.system) / 1000;
    })();
    expect(counts.LimitExceededError).toBeGreaterThanOrEqual(2000 - checked);
    for (const res of refused) {
      const result = res.body.data.signIn;
      expect(result.__typename).toBe('LimitExceededError');
      expect(['signInAttemptsPerAccount', 'signInAttemptsPerAddress']).toContain(result.limit);
      expect(result.retryAfterSeconds).toBeGreaterThanOrEqual(1);
      expect(Number(res.headers['retry-after'])).toBe(result.retryAfterSeconds);
    }
    // What the 2,000 cost the process (test client and server share it): a small part of 2,000 scrypts.
    expect(cpuMs).toBeLessThan(0.2 * 2000 * scryptMs);
  }, 120_000);

  it('the account limit holds across addresses and leaves other accounts alone; right passwords cost nothing', async () => {
    const bob = await signUp(api, 'Bob', randomEmail());
    const carol = await signUp(api, 'Carol', randomEmail());
    // Correct passwords, more than the account's burst, each from a new address: all succeed.
    for (let i = 0; i < ACCOUNT_BURST + 3; i++) {
      const res = await signIn(bob.email, bob.password, randomIp());
      expect(res.body.data.signIn.__typename).toBe('SignInSuccess');
    }
    // Wrong ones from ever new addresses: the account runs dry all the same.
    const types: string[] = [];
    for (let i = 0; i < ACCOUNT_BURST + 5; i++) {
      const res = await signIn(bob.email, 'not the password', randomIp());
      types.push(res.body.data.signIn.__typename);
      if (res.body.data.signIn.__typename === 'LimitExceededError') {
        expect(res.body.data.signIn.limit).toBe('signInAttemptsPerAccount');
        expect(res.body.data.signIn.maximum).toBe(ACCOUNT_BURST);
        expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      }
    }
    expect(types.filter((t) => t === 'AuthenticationError').length).toBeLessThanOrEqual(ACCOUNT_BURST + 2);
    expect(types.at(-1)).toBe('LimitExceededError');
    // Another account, from one of those addresses' neighbours: unaffected.
    const res = await signIn(carol.email, carol.password, randomIp());
    expect(res.body.data.signIn.__typename).toBe('SignInSuccess');
  });

  it('the address limit counts every attempt, sign-ups too, whatever the account; other addresses go on', async () => {
    const from = randomIp();
    const types: string[] = [];
    for (let i = 0; i < ADDRESS_BURST + 5; i++) {
      const res = await signIn(randomEmail(), 'whatever it is', from);
      types.push(res.body.data.signIn.__typename);
    }
    expect(types.filter((t) => t === 'AuthenticationError').length).toBeLessThanOrEqual(ADDRESS_BURST + 2);
    expect(types.at(-1)).toBe('LimitExceededError');
    const last = await signIn(alice.email, alice.password, from);
    expect(last.body.data.signIn).toMatchObject({ __typename: 'LimitExceededError', limit: 'signInAttemptsPerAddress' });
    expect(Number(last.headers['retry-after'])).toBe(last.body.data.signIn.retryAfterSeconds);
    const up = await post(
      api.url,
      { query: SIGN_UP, variables: { input: { email: randomEmail(), password: 'a long enough password', organizationName: 'X' } } },
      { headers: { 'x-forwarded-for': from } },
    );
    expect(up.body.data.signUp).toMatchObject({ __typename: 'LimitExceededError', limit: 'signInAttemptsPerAddress' });
    expect(Number(up.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // A different address is its own bucket.
    const other = await signIn(randomEmail(), 'whatever it is', randomIp());
    expect(other.body.data.signIn.__typename).toBe('AuthenticationError');
  });

  it('only the entry the trusted proxy appended counts: a client-written X-Forwarded-For prefix is ignored', async () => {
    const proxySaw = randomIp();
    const types: string[] = [];
    for (let i = 0; i < ADDRESS_BURST + 5; i++) {
      const res = await signIn(randomEmail(), 'whatever it is', `${randomIp()}, ${proxySaw}`);
      types.push(res.body.data.signIn.__typename);
    }
    expect(types.at(-1)).toBe('LimitExceededError');
  });

  it('the bucket refills: after the retry time the right password signs in', async () => {
    const dave = await signUp(api, 'Dave', randomEmail());
    let refusal: RawResponse | null = null;
    for (let i = 0; i < ACCOUNT_BURST + 5 && !refusal; i++) {
      const res = await signIn(dave.email, 'not the password', randomIp());
      if (res.body.data.signIn.__typename === 'LimitExceededError') refusal = res;
    }
    expect(refusal).not.toBeNull();
    // Even the right password waits while the account's bucket is empty (the price of counting
    // before checking); then it goes through.
    const early = await signIn(dave.email, dave.password, randomIp());
    expect(early.body.data.signIn.__typename).toBe('LimitExceededError');
    await sleep(refusal!.body.data.signIn.retryAfterSeconds * 1000 + 100);
    const later = await signIn(dave.email, dave.password, randomIp());
    expect(later.body.data.signIn.__typename).toBe('SignInSuccess');
  });
});

describe('request rate limits', () => {
  const RATE = 2;
  const BURST = 4;
  let api: TestApi;
  let user: SignedUp;
  let keySecret: string;
  const clients: Client[] = [];
  const query = (token: string | undefined, from = '127.0.0.1', headers: Record<string, string> = {}) =>
    post(api.url, { query: '{ __typename }' }, { token, from, headers });

  const wsClient = (token: string) => {
    const client = createClient({
      url: api.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
      retryAttempts: 0,
      lazy: false,
    });
    clients.push(client);
    return client;
  };
  // One operation over the socket: its result, or the error it ended with.
  const wsRun = (client: Client, q: string) =>
    new Promise<{ data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] }>((resolve, reject) => {
      let result: { data?: unknown; errors?: any[] } = {};
      client.subscribe(
        { query: q },
        {
          next: (msg) => {
            result = msg as typeof result;
            if (msg.errors) resolve(result);
          },
          error: (err) => (Array.isArray(err) ? resolve({ errors: err }) : reject(err)),
          complete: () => resolve(result),
        },
      );
    });
  const waitForFullBucket = () => sleep((BURST / RATE) * 1000 + 100);

  beforeAll(async () => {
    api = await startTestApi({
      env: {
        CVTRAIN_RATE_LIMIT_RPS: String(RATE),
        CVTRAIN_RATE_LIMIT_BURST: String(BURST),
        CVTRAIN_ANON_RATE_LIMIT_RPS: String(RATE),
        CVTRAIN_ANON_RATE_LIMIT_BURST: String(BURST),
      },
    });
    user = await signUp(api, 'Limited');
    const created = ok<{ secret: string }>(
      await api.gql(
        `mutation { createApiKey(input: {name: "ci", role: MEMBER}) { __typename ... on CreateApiKeySuccess { createdApiKey { secret } } } }`,
        {},
        user.token,
      ),
      'createApiKey',
      'createdApiKey',
    );
    keySecret = created.secret;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()));
    await api?.close();
  });

  it('per user over HTTP: 429 with Retry-After past the burst, an API key of the same organization unaffected, then refilled', async () => {
    await waitForFullBucket();
    const statuses: number[] = [];
    let refused: RawResponse | null = null;
    for (let i = 0; i < BURST + 4; i++) {
      const res = await query(user.token);
      statuses.push(res.status);
      if (res.status === 429) refused ??= res;
    }
    expect(statuses.slice(0, BURST)).toEqual(Array(BURST).fill(200));
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(BURST + 1);
    expect(refused).not.toBeNull();
    const seconds = Number(refused!.headers['retry-after']);
    expect(seconds).toBeGreaterThanOrEqual(1);
    expect(refused!.body.errors[0].extensions).toEqual({ code: 'LIMIT_EXCEEDED', retryAfterSeconds: seconds });
    // Its own bucket: the key goes on while the user waits.
    expect((await query(keySecret)).status).toBe(200);
    await sleep(seconds * 1000 + 50);
    expect((await query(user.token)).status).toBe(200);
  });

  it('per API key over HTTP', async () => {
    await waitForFullBucket();
    const statuses: number[] = [];
    for (let i = 0; i < BURST + 4; i++) statuses.push((await query(keySecret)).status);
    expect(statuses.slice(0, BURST)).toEqual(Array(BURST).fill(200));
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(BURST + 1);
    expect((await query(user.token)).status).toBe(200);
  });

  it('over a websocket: operations draw on the same bucket as HTTP and are refused with LIMIT_EXCEEDED', async () => {
    await waitForFullBucket();
    const client = wsClient(keySecret);
    const results = [];
    for (let i = 0; i < BURST + 3; i++) results.push(await wsRun(client, '{ __typename }'));
    expect(results.slice(0, BURST).map((r) => r.data)).toEqual(Array(BURST).fill({ __typename: 'Query' }));
    expect(results.filter((r) => r.data).length).toBeLessThanOrEqual(BURST + 1);
    const refused = results.find((r) => r.errors)!;
    expect(refused.errors?.[0].extensions).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(refused.errors?.[0].extensions?.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    // A subscription is an operation too, and HTTP sees the same empty bucket.
    const sub = await wsRun(client, 'subscription { gpuNodeUpdated { id } }');
    expect(sub.errors?.[0].extensions).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect((await query(keySecret)).status).toBe(429);
  });

  it('per user over a websocket', async () => {
    await waitForFullBucket();
    for (let i = 0; i < BURST; i++) expect((await query(user.token)).status).toBe(200);
    const res = await wsRun(wsClient(user.token), '{ __typename }');
    expect(res.errors?.[0].extensions).toMatchObject({ code: 'LIMIT_EXCEEDED' });
  });

  it('anonymous requests per client address, which X-Forwarded-For cannot change without a trusted proxy', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < BURST + 3; i++) {
      statuses.push((await query(undefined, '127.0.0.3', { 'x-forwarded-for': randomIp() })).status);
    }
    expect(statuses.slice(0, BURST)).toEqual(Array(BURST).fill(200));
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(BURST + 1);
    const refused = await query(undefined, '127.0.0.3');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(refused.body.errors[0].extensions.code).toBe('LIMIT_EXCEEDED');
    // Another address, and a signed-in caller at the same address, have buckets of their own.
    expect((await query(undefined, '127.0.0.4')).status).toBe(200);
    expect((await query(keySecret, '127.0.0.3')).status).toBe(200);
  });
});

describe('limit settings and failure modes', () => {
  it('0 turns a limit off; a bad value stops the server naming the variable', () => {
    const config = loadConfig({
      NODE_ENV: 'test',
      ...testSecrets(),
      CVTRAIN_RATE_LIMIT_RPS: '0',
      CVTRAIN_ANON_RATE_LIMIT_RPS: '0',
      CVTRAIN_AUTH_ADDRESS_PER_MIN: '0',
      CVTRAIN_AUTH_ACCOUNT_PER_MIN: '0',
    });
    const redis = new Redis({ lazyConnect: true });
    const limits = new RateLimits(redis, 'unused:', config.rateLimits);
    expect([limits.requests, limits.anonymous, limits.authPerAddress, limits.authPerAccount]).toEqual([null, null, null, null]);
    limits.close();
    redis.disconnect();
    expect(() => loadConfig({ NODE_ENV: 'test', ...testSecrets(), CVTRAIN_TRUST_PROXY: 'yes' })).toThrow(/CVTRAIN_TRUST_PROXY/);
    // Defaults: a dashboard polling hard (a few requests a second) stays far below them.
    const defaults = loadConfig({ NODE_ENV: 'test', ...testSecrets() }).rateLimits;
    expect(defaults.requests).toMatchObject({ ratePerSecond: 50, burst: 200 });
    expect(defaults.trustProxy).toBe(0);
  });

  it('with Redis unreachable, requests go ahead instead of being refused', async () => {
    const port = await freePort();
    const redis = new Redis({ port, maxRetriesPerRequest: 1, commandTimeout: 500, retryStrategy: () => 1000 });
    redis.on('error', () => undefined);
    const leased = new LeasedBuckets(new TokenBuckets(redis, 'dead:'), { name: 'req', ratePerSecond: 1, burst: 1 });
    try {
      for (let i = 0; i < 5; i++) expect(await leased.take('u:someone')).toBe(0);
    } finally {
      leased.close();
      redis.disconnect();
    }
  });

  it('IPv6 clients share their /64; IPv4-mapped addresses are IPv4', () => {
    expect(addressBucket('2001:db8:1:2:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:1:2::/64');
    expect(addressBucket('2001:db8:1:2::1')).toBe(addressBucket('2001:db8:1:2:ffff::9'));
    expect(addressBucket('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressBucket('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(addressBucket('192.0.2.7')).toBe('192.0.2.7');
    expect(addressBucket(null)).toBe('unknown');
  });
});
