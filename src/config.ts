// Every tunable and environment variable of the API server lives here, validated once at start.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

export class ConfigError extends Error {
  constructor(public readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

const intFrom = (min: number, max: number) =>
  z.coerce.number().int().min(min).max(max);

// A keyring entry is "<keyId>:<base64 of 32 bytes>"; the first entry encrypts, all of them decrypt,
// so an operator rotates by prepending a new key and re-encrypting at leisure.
const keyringSchema = z.string().transform((value, ctx) => {
  const entries = value.split(',').map((s) => s.trim()).filter(Boolean);
  const keys: { id: string; key: Buffer }[] = [];
  for (const entry of entries) {
    const sep = entry.indexOf(':');
    const id = sep > 0 ? entry.slice(0, sep) : '';
    const key = sep > 0 ? Buffer.from(entry.slice(sep + 1), 'base64') : Buffer.alloc(0);
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(id) || key.length !== 32) {
      ctx.addIssue({
        code: 'custom',
        message: `each entry must be "<keyId>:<base64 of 32 bytes>" (keyId: letters, digits, _ or -); entry ${keys.length + 1} is not`,
      });
      return z.NEVER;
    }
    if (keys.some((k) => k.id === id)) {
      ctx.addIssue({ code: 'custom', message: `key id "${id}" appears twice` });
      return z.NEVER;
    }
    keys.push({ id, key });
  }
  if (keys.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'needs at least one key' });
    return z.NEVER;
  }
  return keys;
});

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: intFrom(0, 65535).default(4000),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must be a redis:// URL').default('redis://127.0.0.1:6379'),
  CVTRAIN_DATA_DIR: z.string().min(1).default('./data'),
  // Prefix of every Redis key, queue and channel, so deployments and test runs can share one Redis.
  CVTRAIN_REDIS_PREFIX: z.string().regex(/^[A-Za-z0-9:_-]*$/, 'letters, digits, ":", "_" or "-" only').default('cvtrain:'),
  CVTRAIN_SECRET_KEYS: keyringSchema.optional(),
  CVTRAIN_JWT_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  // Session token lifetime in seconds (12 hours by default).
  CVTRAIN_JWT_TTL_S: intFrom(60, 60 * 60 * 24 * 90).default(12 * 3600),
  // GraphiQL on GET /graphql from a browser; off by default in production.
  CVTRAIN_GRAPHIQL: z.enum(['0', '1', 'true', 'false']).optional(),
  // Largest request body accepted, in bytes; GraphQL documents and variables are small.
  CVTRAIN_MAX_BODY_BYTES: intFrom(1024, 64 * 1024 * 1024).default(1024 * 1024),
  // Query depth and alias limits: stop cheap requests that expand into expensive work.
  CVTRAIN_MAX_DEPTH: intFrom(3, 100).default(14),
  CVTRAIN_MAX_ALIASES: intFrom(1, 1000).default(30),
  // Connection pool per API process; PostgreSQL copes with a few per core.
  CVTRAIN_DB_POOL_MAX: intFrom(1, 200).default(10),
  // "auto": use DATABASE_URL's server, or start an embedded PostgreSQL (PGlite) if none answers.
  CVTRAIN_EMBEDDED_PG: z.enum(['auto', 'always', 'never']).default('auto'),
  CVTRAIN_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
});

export type Keyring = { id: string; key: Buffer }[];

export interface Config {
  env: 'development' | 'production' | 'test';
  host: string;
  port: number;
  databaseUrl: string;
  databaseUrlExplicit: boolean;
  redisUrl: string;
  dataDir: string;
  redisPrefix: string;
  secretKeys: Keyring;
  jwtSecret: Uint8Array;
  jwtTtlSeconds: number;
  graphiql: boolean;
  maxBodyBytes: number;
  maxDepth: number;
  maxAliases: number;
  dbPoolMax: number;
  embeddedPg: 'auto' | 'always' | 'never';
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
}

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/cvtrain';

interface GeneratedSecrets {
  secretKeys: string;
  jwtSecret: string;
}

/** Development convenience: secrets made once and kept in the data dir, so the quickstart needs no setup. */
function loadOrCreateDevSecrets(dataDir: string, warn: (msg: string) => void): GeneratedSecrets {
  const file = path.join(dataDir, 'dev-secrets.json');
  if (existsSync(file)) {
    return JSON.parse(readFileSync(file, 'utf8')) as GeneratedSecrets;
  }
  mkdirSync(dataDir, { recursive: true });
  const secrets: GeneratedSecrets = {
    secretKeys: `dev1:${randomBytes(32).toString('base64')}`,
    jwtSecret: randomBytes(48).toString('base64url'),
  };
  writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  warn(`generated development secrets in ${file}; set CVTRAIN_SECRET_KEYS and CVTRAIN_JWT_SECRET in production`);
  return secrets;
}

export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  warn: (msg: string) => void = (m) => process.stderr.write(`[config] warning: ${m}\n`),
): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => `${issue.path.join('.') || '(env)'}: ${issue.message}`),
    );
  }
  const e = parsed.data;
  const dataDir = path.resolve(e.CVTRAIN_DATA_DIR);
  let secretKeys = e.CVTRAIN_SECRET_KEYS;
  let jwtSecret = e.CVTRAIN_JWT_SECRET;
  if (!secretKeys || !jwtSecret) {
    if (e.NODE_ENV === 'production') {
      const missing = [!secretKeys && 'CVTRAIN_SECRET_KEYS', !jwtSecret && 'CVTRAIN_JWT_SECRET'].filter(Boolean);
      throw new ConfigError(missing.map((name) => `${name}: required when NODE_ENV=production`));
    }
    const dev = loadOrCreateDevSecrets(dataDir, warn);
    secretKeys ??= keyringSchema.parse(dev.secretKeys);
    jwtSecret ??= dev.jwtSecret;
  }
  const graphiql =
    e.CVTRAIN_GRAPHIQL !== undefined
      ? e.CVTRAIN_GRAPHIQL === '1' || e.CVTRAIN_GRAPHIQL === 'true'
      : e.NODE_ENV !== 'production';
  return {
    env: e.NODE_ENV,
    host: e.HOST,
    port: e.PORT,
    databaseUrl: e.DATABASE_URL ?? DEFAULT_DATABASE_URL,
    databaseUrlExplicit: e.DATABASE_URL !== undefined,
    redisUrl: e.REDIS_URL,
    dataDir,
    redisPrefix: e.CVTRAIN_REDIS_PREFIX,
    secretKeys,
    jwtSecret: new TextEncoder().encode(jwtSecret),
    jwtTtlSeconds: e.CVTRAIN_JWT_TTL_S,
    graphiql,
    maxBodyBytes: e.CVTRAIN_MAX_BODY_BYTES,
    maxDepth: e.CVTRAIN_MAX_DEPTH,
    maxAliases: e.CVTRAIN_MAX_ALIASES,
    dbPoolMax: e.CVTRAIN_DB_POOL_MAX,
    embeddedPg: e.CVTRAIN_EMBEDDED_PG,
    logLevel: e.CVTRAIN_LOG_LEVEL,
  };
}

/** Application limits that are not per deployment; kept here so they are found in one place. */
export const limits = {
  // Relay connections: default and largest page size.
  pageDefault: 20,
  pageMax: 100,
  // scrypt cost for passwords: N=2^15 takes ~50 ms here, slow enough for offline guessing to hurt.
  scrypt: { N: 1 << 15, r: 8, p: 1, keyLen: 64, maxmem: 64 * 1024 * 1024 },
  passwordMinLength: 10,
  passwordMaxLength: 200,
  nameMaxLength: 120,
};
