// Logs never contain credentials (issue 12, finding 4): a statement that fails in PostgreSQL was
// logged with its SQL and every value inlined, credentials_ciphertext included. Here a real
// request makes a real INSERT fail (a CHECK constraint added for the test stands for any fault
// the database may raise), and everything the process writes to stdout and stderr meanwhile is
// searched for the values of that request.
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { configureLogger, createLogger, errorFields, redact } from '../../src/lib/log.js';
import { signUp, startTestApi, type SignedUp, type TestApi } from '../helpers/api.js';

let api: TestApi;
let owner: SignedUp;

beforeAll(async () => {
  api = await startTestApi({ env: { NODE_ENV: 'development', CVTRAIN_LOG_LEVEL: 'debug' } });
  owner = await signUp(api, 'Log Org');
  // Fails the INSERT of a profile with this name, after validation, inside PostgreSQL.
  await api.app.sql.query(`alter table compute_profiles add constraint test_refuse_boom check (name <> 'boom')`);
  await api.app.sql.query(`alter table storage_profiles add constraint test_refuse_boom check (name <> 'boom')`);
});
afterAll(async () => api?.close());
afterEach(() => configureLogger({ level: api.app.config.logLevel, json: false }));

/** Everything written to stdout and stderr while `fn` runs. */
async function captureOutput(fn: () => Promise<unknown>): Promise<string> {
  const chunks: string[] = [];
  const out = process.stdout.write;
  const err = process.stderr.write;
  const grab = (chunk: unknown) => {
    chunks.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8'));
    return true;
  };
  process.stdout.write = grab as typeof process.stdout.write;
  process.stderr.write = grab as typeof process.stderr.write;
  try {
    await fn();
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  return chunks.join('');
}

const SECRET = `secret-${randomUUID()}`;
const IMAGE_MARKER = `image-${randomUUID().slice(0, 8)}`;
// What the failed statements carried and the log must not: ciphertexts of the test keyring
// ("test1"), the credentials themselves, and the request's values (SQL parameters).
const FORBIDDEN = [/v1\.test1\.[\w-]{16}\./, new RegExp(SECRET), new RegExp(IMAGE_MARKER), /AKIA…ST01|AKIAVALIDATIONTEST01/];

describe('a failing INSERT is logged without its values', () => {
  it.each([
    [
      'compute profile',
      'createComputeProfile',
      `mutation($input: CreateComputeProfileInput!) { createComputeProfile(input: $input) { __typename } }`,
      {
        name: 'boom',
        provider: 'SAGEMAKER',
        strategy: 'CHEAPEST',
        config: { region: 'us-east-1', roleArn: 'arn:aws:iam::123456789012:role/train', instanceType: 'ml.g5.xlarge', image: IMAGE_MARKER },
        credentials: { accessKeyId: 'AKIAVALIDATIONTEST01', secretAccessKey: SECRET },
      },
    ],
    [
      'storage profile',
      'createStorageProfile',
      `mutation($input: CreateStorageProfileInput!) { createStorageProfile(input: $input) { __typename } }`,
      {
        name: 'boom',
        kind: 'S3',
        config: { bucket: `b-${IMAGE_MARKER}`, region: 'eu-central-1', endpoint: 'http://127.0.0.1:9', forcePathStyle: true },
        credentials: { accessKeyId: 'AKIAVALIDATIONTEST01', secretAccessKey: SECRET },
      },
    ],
  ])('%s', async (_name, field, query, input) => {
    let res: Awaited<ReturnType<TestApi['gql']>> | undefined;
    const log = await captureOutput(async () => {
      res = await api.gql(query, { input }, owner.token);
    });
    // The request really failed in PostgreSQL and that was logged, with its reason...
    expect((res!.errors?.[0] as { path?: string[] } | undefined)?.path).toEqual([field]);
    expect(log).toMatch(/ERROR/);
    expect(log).toMatch(/violates check constraint "test_refuse_boom"/);
    // ...but none of its values.
    for (const re of FORBIDDEN) expect(log).not.toMatch(re);
    expect(log).not.toMatch(/values \('/);
  });
});

describe('the logger redacts whatever it is handed', () => {
  it('secret-named fields at any depth, tokens, API keys and ciphertexts in any text, in both formats', async () => {
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    const apiKey = `cvt_${'a'.repeat(32)}_${'B'.repeat(43)}`;
    const envelope = 'v1.test1.AAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBB';
    for (const json of [false, true]) {
      configureLogger({ level: 'debug', json });
      const log = await captureOutput(async () => {
        const l = createLogger('test');
        l.error(`request with Bearer ${jwt} failed`, {
          password: 'hunter2-password',
          nested: { credentials: { secretAccessKey: 'nested-secret' }, sessionToken: 'tok-123', note: `key ${apiKey}` },
          row: `stored ${envelope}`,
        });
        l.warn('x', errorFields(new Error(`insert into "t" ("a", "b") values ('${SECRET}', 42) - boom`)));
      });
      expect(log).toContain('request with Bearer [redacted] failed');
      for (const secret of ['hunter2-password', 'nested-secret', 'tok-123', jwt, apiKey, envelope, SECRET, ', 42)']) {
        expect(log).not.toContain(secret);
      }
      expect(log).toContain('- boom');
    }
  });

  it('SQL: every literal and number of the statement, and the row values PostgreSQL quotes', () => {
    expect(
      redact(`update "m" set "name" = 'it''s - a', "config" = E'{"a":"b\\\\c''d"}', "n" = 5 where "id" = 'x' - value too long`),
    ).toBe(`update "m" set "name" = ?, "config" = ?, "n" = ? where "id" = ? - value too long`);
    expect(redact('new row violates check constraint "c" - detail: Failing row contains (1, secret, v1.k.x).')).toBe(
      'new row violates check constraint "c" - detail: Failing row contains (?).',
    );
    expect(redact('duplicate key value violates unique constraint "u" Key (organization_id, name)=(abc, secret) already exists.')).toBe(
      'duplicate key value violates unique constraint "u" Key (organization_id, name)=(?) already exists.',
    );
    // Text that is no statement is left as it is.
    expect(redact("it's been 3 days - retrying")).toBe("it's been 3 days - retrying");
  });
});
