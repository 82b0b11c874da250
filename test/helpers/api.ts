// Test harness: a fresh PostgreSQL database and a real API server on a free port per test file.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { MikroORM } from '@mikro-orm/postgresql';
import { createApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { dropDatabase, ensureDatabase, initOrm, migrateUp } from '../../src/db/orm.js';
import { createSqlPool } from '../../src/db/sql.js';
import { configureLogger } from '../../src/lib/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { startWorkers, type Workers } from '../../src/workers.js';

export const PG_BASE = process.env.CVTRAIN_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432';

export interface GqlResponse<T = any> {
  status: number;
  data: T;
  errors?: { message: string; extensions?: Record<string, unknown> }[];
  headers: Headers;
}

export interface TestApi {
  url: string;
  app: App;
  server: RunningServer;
  orm: MikroORM;
  dbUrl: string;
  dataDir: string;
  workers: Workers | null;
  gql<T = any>(query: string, variables?: Record<string, unknown>, token?: string | null): Promise<GqlResponse<T>>;
  close(): Promise<void>;
}

export function testSecrets() {
  return {
    CVTRAIN_SECRET_KEYS: `test1:${randomBytes(32).toString('base64')}`,
    CVTRAIN_JWT_SECRET: randomBytes(32).toString('base64url'),
    CVTRAIN_NODE_TOKEN: randomBytes(24).toString('base64url'),
    CVTRAIN_STORAGE_SECRET: randomBytes(32).toString('base64url'),
  };
}

/**
 * Test files sign up many users from 127.0.0.1 and send requests as fast as they can, which the
 * default limits would refuse. The limits stay on, so their code runs in every test, but out of
 * reach; test/security/rate-limits.test.ts sets its own.
 */
export const HIGH_RATE_LIMITS = {
  CVTRAIN_RATE_LIMIT_RPS: '1000000',
  CVTRAIN_RATE_LIMIT_BURST: '1000000',
  CVTRAIN_ANON_RATE_LIMIT_RPS: '1000000',
  CVTRAIN_ANON_RATE_LIMIT_BURST: '1000000',
  CVTRAIN_AUTH_ADDRESS_PER_MIN: '1000000',
  CVTRAIN_AUTH_ADDRESS_BURST: '1000000',
  CVTRAIN_AUTH_ACCOUNT_PER_MIN: '1000000',
  CVTRAIN_AUTH_ACCOUNT_BURST: '1000000',
};

export async function startTestApi(
  opts: { env?: Record<string, string>; onQuery?: (sql: string) => void; workers?: boolean } = {},
): Promise<TestApi> {
  const dbName = `cvtrain_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  const dbUrl = `${PG_BASE}/${dbName}`;
  const dataDir = mkdtempSync(path.join(tmpdir(), 'cvtrain-test-'));
  configureLogger({ level: 'silent', json: false });
  await ensureDatabase(dbUrl);
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: dbUrl,
    CVTRAIN_DATA_DIR: dataDir,
    CVTRAIN_REDIS_PREFIX: `cvtrain-test-${randomBytes(4).toString('hex')}:`,
    CVTRAIN_LOG_LEVEL: 'silent',
    ...testSecrets(),
    ...HIGH_RATE_LIMITS,
    ...opts.env,
  });
  configureLogger({ level: config.logLevel, json: false });
  const orm = await initOrm({ databaseUrl: dbUrl, poolMax: 5, onQuery: opts.onQuery });
  await migrateUp(orm);
  const sql = createSqlPool(dbUrl, 5, opts.onQuery);
  const app = createApp(config, orm, sql);
  const server = await startServer(app, { port: 0, host: '127.0.0.1' });
  const workers = opts.workers ? startWorkers(app) : null;
  return {
    url: server.url,
    app,
    server,
    orm,
    dbUrl,
    dataDir,
    gql: (query, variables, token) => gql(server.url, query, variables, token),
    workers,
    async close() {
      await workers?.stop();
      await server.close();
      await app.close();
      await sql.close();
      await orm.close(true);
      await dropDatabase(dbUrl);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function gql<T = any>(
  url: string,
  query: string,
  variables?: Record<string, unknown>,
  token?: string | null,
): Promise<GqlResponse<T>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data: T; errors?: GqlResponse['errors'] };
  return { status: res.status, data: body.data, errors: body.errors, headers: res.headers };
}

export interface SignedUp {
  token: string;
  userId: string;
  orgId: string;
  email: string;
  password: string;
}

let counter = 0;
export async function signUp(api: TestApi, orgName = 'Acme', email?: string): Promise<SignedUp> {
  const address = email ?? `user${++counter}-${randomBytes(3).toString('hex')}@example.com`;
  const password = 'correct horse battery staple';
  const res = await api.gql(
    `mutation($input: SignUpInput!) { signUp(input: $input) {
      __typename ... on SignUpSuccess { authPayload { token user { id } organization { id } } }
      ... on Error { message } } }`,
    { input: { email: address, password, organizationName: orgName } },
  );
  const payload = res.data?.signUp?.authPayload;
  if (!payload) throw new Error(`signUp failed: ${JSON.stringify(res)}`);
  return { token: payload.token, userId: payload.user.id, orgId: payload.organization.id, email: address, password };
}

/** Asserts success of a mutation result union and returns its data field. */
export function ok<T = any>(res: GqlResponse, field: string, dataField: string): T {
  if (res.errors) throw new Error(`GraphQL errors: ${JSON.stringify(res.errors)}`);
  const result = res.data[field];
  if (!result || !result.__typename?.endsWith('Success')) {
    throw new Error(`${field} did not succeed: ${JSON.stringify(result)}`);
  }
  return result[dataField] as T;
}
