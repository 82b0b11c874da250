// Hostile-client suite, issue 12 findings 3, 4 (masking) and 10 (log levels): no error message
// echoes a variable's value, database errors never show SQL, values or ciphertext (development
// included), and clients' mistakes are not logged at ERROR.
import { randomBytes } from 'node:crypto';
import { createClient } from 'graphql-ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { signUp, startTestApi, type GqlResponse, type TestApi } from '../helpers/api.js';

// What a secret may hold: the separators the old redaction cut at, quotes, escapes, a fake path.
const SECRET = `hunter2; at "input.email"; Expected type "x" 'q' \\ ${randomBytes(6).toString('hex')}`;
const MARKER = SECRET.slice(-12);

let dev: TestApi;
let prod: TestApi;
const lines: string[] = [];
const original = { out: process.stdout.write.bind(process.stdout), err: process.stderr.write.bind(process.stderr) };
beforeAll(async () => {
  [dev, prod] = await Promise.all([
    startTestApi({ env: { NODE_ENV: 'development', CVTRAIN_LOG_LEVEL: 'debug' } }),
    startTestApi({ env: { NODE_ENV: 'production', CVTRAIN_LOG_LEVEL: 'debug' } }),
  ]);
  // The logger writes lines to stdout (debug, info) and stderr (warn, error); both are kept here.
  const capture = (write: typeof original.out) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write;
  process.stdout.write = capture(original.out);
  process.stderr.write = capture(original.err);
});
afterAll(async () => {
  process.stdout.write = original.out;
  process.stderr.write = original.err;
  await dev?.close();
  await prod?.close();
});
afterEach(() => {
  lines.length = 0;
});

/** Requests whose variables carry SECRET where coercion fails, each quoting it in graphql-js. */
const leaks: [string, string, Record<string, unknown>][] = [
  ['an unknown field next to it', 'mutation($input: SignInInput!) { signIn(input: $input) { __typename } }', { input: { email: 'a@example.com', password: SECRET, extra: 1 } }],
  ['a string where an object goes', 'mutation($input: SignInInput!) { signIn(input: $input) { __typename } }', { input: SECRET }],
  ['a string where an Int goes', 'query($n: Int) { models(first: $n) { totalCount } }', { n: SECRET }],
  ['an object where an ID goes', 'query($id: ID!) { node(id: $id) { id } }', { id: { token: SECRET } }],
  ['an unknown enum value', 'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { __typename } }', { input: { name: 'k', role: SECRET } }],
  ['a list of it where a String goes', 'mutation($input: SignInInput!) { signIn(input: $input) { __typename } }', { input: { email: [SECRET], password: 'x' } }],
];

function expectNoSecret(res: unknown) {
  const text = JSON.stringify(res);
  expect(text).not.toContain(MARKER);
  expect(text).not.toContain('hunter2');
}

describe('finding 3: no error message echoes a variable value', () => {
  for (const [name, query, variables] of leaks) {
    it(`over HTTP, development and production: ${name}`, async () => {
      for (const api of [dev, prod]) {
        const res = await api.gql(query, variables);
        expect(res.errors?.length, JSON.stringify(res)).toBeGreaterThan(0);
        // Still says which variable and why.
        expect(res.errors?.[0].message).toMatch(/^Variable "\$\w+" got invalid value/);
        expectNoSecret(res);
      }
      expect(lines.join('\n')).not.toContain(MARKER);
    });
  }

  it('keeps the variable and a reason in the schema\'s terms, never the value', async () => {
    const res = await dev.gql(leaks[0][1], leaks[0][2]);
    expect(res.errors?.[0].message).toBe('Variable "$input" got invalid value; Field "extra" is not defined by type "SignInInput".');
    const int = await dev.gql('mutation($input: SignInInput!) { signIn(input: $input) { __typename } }', { input: { email: 5, password: SECRET } });
    // graphql-jit named the nested field's variable after the field ("$email"); graphql-js's path is kept.
    expect(int.errors?.[0].message).toBe('Variable "$input" got invalid value at "input.email"; String cannot represent a non string value.');
  });

  it('over the websocket, for queries and subscriptions', async () => {
    // Sockets without credentials are closed at connection_init (4401), so the caller signs in.
    const { token } = await signUp(dev, 'Redaction over ws');
    const client = createClient({
      url: dev.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: true,
      connectionParams: { authorization: `Bearer ${token}` },
    });
    const run = (query: string, variables: Record<string, unknown>) =>
      new Promise<unknown[]>((resolve) => {
        const got: unknown[] = [];
        client.subscribe(
          { query, variables },
          { next: (m) => void got.push(m), error: (e) => resolve([...got, e]), complete: () => resolve(got) },
        );
      });
    try {
      for (const [, query, variables] of leaks) {
        const got = await run(query, variables);
        expect(JSON.stringify(got)).toMatch(/got invalid value/);
        expectNoSecret(got);
      }
      const sub = await run('subscription($id: ID!) { trainingSessionUpdated(id: $id) { id } }', { id: { token: SECRET } });
      expect(JSON.stringify(sub)).toMatch(/got invalid value/);
      expectNoSecret(sub);
    } finally {
      await client.dispose();
    }
  });
});

const CREATE_PROFILE = `mutation($input: CreateComputeProfileInput!) { createComputeProfile(input: $input) { __typename } }`;
const CREDENTIALS = { accessKeyId: 'AKIAREDACTIONTEST000', secretAccessKey: `db-secret-${randomBytes(8).toString('hex')}` };

/** Makes every insert into compute_profiles fail in PostgreSQL, after MikroORM built the INSERT. */
async function breakProfileInserts(api: TestApi) {
  await api.orm.em.getConnection().execute(`
    create or replace function test_refuse_profile() returns trigger language plpgsql as $$
      begin raise exception 'test trigger refuses the row'; end $$;
    create trigger test_refuse_profile before insert on compute_profiles for each row execute function test_refuse_profile();`);
}

describe('finding 4 (masking): database errors never show SQL, values or ciphertext', () => {
  it('in development: a stack, no SQL, no values; the log line is ERROR and as clean', async () => {
    for (const api of [dev, prod]) {
      const user = await signUp(api, 'Db');
      await breakProfileInserts(api);
      lines.length = 0;
      const res = await api.gql(
        CREATE_PROFILE,
        {
          input: {
            name: 'aws',
            provider: 'SAGEMAKER',
            strategy: 'PREFERRED',
            config: { region: 'eu-west-1', roleArn: 'arn:aws:iam::123456789012:role/cvtrain', instanceType: 'ml.g5.xlarge', image: 'i:1' },
            credentials: CREDENTIALS,
          },
        },
        user.token,
      );
      expect(res.errors?.[0].message).toBe('Unexpected error.');
      const text = JSON.stringify(res);
      for (const leak of [CREDENTIALS.secretAccessKey, CREDENTIALS.accessKeyId, 'insert into', 'credentials_ciphertext', 'eu-west-1', 'test trigger refuses']) {
        expect(text, leak).not.toContain(leak);
      }
      if (api === dev) {
        // Development still shows what failed and where.
        const originalError = res.errors?.[0].extensions?.originalError as Record<string, string>;
        expect(originalError).toMatchObject({ name: expect.stringMatching(/Exception$/), message: 'database error', sqlState: 'P0001' });
        expect(originalError.stack).toMatch(/^\s+at /);
      }
      const log = lines.join('\n');
      expect(log).toMatch(/ERROR/);
      expect(log).toMatch(/P0001/);
      for (const leak of [CREDENTIALS.secretAccessKey, 'insert into', 'eu-west-1']) expect(log, leak).not.toContain(leak);
    }
  });
});

describe("finding 10: clients' mistakes are not logged at ERROR", () => {
  it('unauthenticated, not found, bad ids, coercion, parse and validation errors, limits', async () => {
    const user = await signUp(dev, 'Quiet');
    const requests: [string, Record<string, unknown>, string | null][] = [
      ['{ models { totalCount } }', {}, null],
      ['mutation { createModel(input: {name: "m", task: OBJECT_DETECTION, framework: TORCHVISION, architecture: "x"}) { __typename } }', {}, null],
      ['{ node(id: "TW9kZWw6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw") { id } }', {}, user.token],
      ['query($n: Int) { models(first: $n) { totalCount } }', { n: 'x' }, user.token],
      ['{ models { ', {}, null],
      ['{ nope }', {}, null],
      [`{ ${'__typename '.repeat(3000)}}`, {}, null],
    ];
    const results: GqlResponse[] = [];
    for (const [query, variables, token] of requests) results.push(await dev.gql(query, variables, token));
    expect(results.filter((r) => r.errors).length).toBeGreaterThanOrEqual(5);
    const loud = lines.filter((l) => / (ERROR|WARN) /.test(l));
    expect(loud).toEqual([]);
  });
});
