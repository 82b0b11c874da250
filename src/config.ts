// Every tunable and environment variable of the API server lives here, validated once at start.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_REDIS_PREFIX, REDIS_PREFIX_PATTERN } from '../protocol/index.js';
import type { RateLimitSettings } from './lib/rate-limit.js';
import type { BackendConfig, StorageSettings } from './storage/types.js';

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

const httpUrl = z
  .string()
  .regex(/^https?:\/\/[^\s?#]+$/, 'must be an http(s) URL without query or fragment')
  .transform((u) => u.replace(/\/+$/, ''));

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
  CVTRAIN_REDIS_PREFIX: z.string().regex(REDIS_PREFIX_PATTERN, 'letters, digits, ":", "_" or "-" only').default(DEFAULT_REDIS_PREFIX),
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
  // --- GraphQL request limits (issue 12; src/graphql/limits.ts), checked before parsing ---
  // Most lexical tokens in one document (comments are not tokens). GraphiQL's introspection query
  // has 184 and the persisted operations at most 61; 55,000 aliases or 21,200 chained fragments
  // need over 100,000. Refusing costs lexing at most this many tokens.
  CVTRAIN_MAX_TOKENS: intFrom(100, 100_000).default(2000),
  // Deepest nesting of "{", "[" and "(" in a document and of arrays and objects in variables:
  // graphql-js parses, validates and coerces recursively, and ~5,000 levels overflowed the stack.
  // Introspection nests 10 deep.
  CVTRAIN_MAX_NESTING: intFrom(8, 1000).default(32),
  // Most times one response path (viewer.organization.id) may be selected, fragments included and
  // multiplied through nesting: validation compares each pair of them with their sub-selections
  // (500 copies of `viewer { role }` cost ~1 s of CPU; 18 x 18 nested copies 1 s).
  CVTRAIN_MAX_FIELD_REPEATS: intFrom(2, 1000).default(20),
  // Byte budget (MiB) of the parsed-document cache per API process; a parsed document costs
  // ~500 bytes per token besides its text. 0 turns the cache off.
  CVTRAIN_DOCUMENT_CACHE_MB: intFrom(0, 4096).default(32),
  // Introspection for callers without credentials; on by default except in production. Signed-in
  // callers may always introspect.
  CVTRAIN_INTROSPECTION: z.enum(['0', '1', 'true', 'false']).optional(),
  // Benchmarks only (npm run bench compares both): 0 turns the token, nesting and byte-bounded
  // cache limits off and restores yoga's 1,024-entry caches. Never set it in a deployment.
  CVTRAIN_REQUEST_LIMITS: z.enum(['0', '1', 'true', 'false']).default('1'),
  // Connection pool per API process; PostgreSQL copes with a few per core.
  CVTRAIN_DB_POOL_MAX: intFrom(1, 200).default(10),
  // Cached query responses per API process (src/graphql/response-cache.ts); 0 turns the cache off.
  CVTRAIN_RESPONSE_CACHE_ENTRIES: intFrom(0, 1_000_000).default(1000),
  // Upper bound of the cached responses' serialized size, in MiB.
  CVTRAIN_RESPONSE_CACHE_MB: intFrom(1, 65_536).default(64),
  // "auto": use DATABASE_URL's server, or start an embedded PostgreSQL (PGlite) if none answers.
  CVTRAIN_EMBEDDED_PG: z.enum(['auto', 'always', 'never']).default('auto'),
  CVTRAIN_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  // --- gpu-nodes and training ---
  // Join token gpu-nodes present on /node/v1/*; generated in development like the other secrets.
  CVTRAIN_NODE_TOKEN: z.string().min(24, 'must be at least 24 characters').optional(),
  // How often nodes heartbeat, and after how long without one a node counts as OFFLINE and its
  // sessions are queued again elsewhere (the recovery target is under 15 s).
  CVTRAIN_NODE_HEARTBEAT_MS: intFrom(200, 60_000).default(2000),
  CVTRAIN_NODE_OFFLINE_MS: intFrom(500, 600_000).default(6000),
  // npm start also runs one gpu-node on this machine (0 turns it off).
  CVTRAIN_LOCAL_GPU_NODE: z.enum(['0', '1', 'true', 'false']).default('1'),
  // Background workers (event ingester, reaper) in this process; API-only replicas may turn them off.
  CVTRAIN_WORKERS: z.enum(['0', '1', 'true', 'false']).default('1'),
  // How often a live subscription re-checks its caller's credentials (revoked keys, removed members).
  CVTRAIN_SUBSCRIPTION_REAUTH_MS: intFrom(100, 3_600_000).default(30_000),
  // --- websockets (src/graphql/websocket.ts; README "The API") ---
  // connection_init, which carries the credentials, must arrive this soon after the socket opens
  // (else close 4408): a socket that never authenticates still holds memory and a descriptor.
  CVTRAIN_WS_INIT_TIMEOUT_MS: intFrom(100, 60_000).default(3000),
  // Open connections per user and per API key on one API process; the next is closed with 4429.
  // A dashboard tab or a script needs one, so 50 is far above honest use and far below 300
  // connections x 10 subscriptions held by one probe.
  CVTRAIN_WS_MAX_CONNECTIONS_PER_USER: intFrom(1, 1_000_000).default(50),
  CVTRAIN_WS_MAX_CONNECTIONS_PER_API_KEY: intFrom(1, 1_000_000).default(50),
  // Operations running at once on one connection; the next is refused with LIMIT_EXCEEDED.
  // The dashboard runs a handful; 1,000 on one connection cost a probe 1.76 s of server CPU.
  CVTRAIN_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION: intFrom(1, 100_000).default(100),
  // --- dataset archive validation (zip-bomb and size limits; defaults in datasets/validation/limits.ts) ---
  CVTRAIN_DATASET_MAX_ENTRIES: intFrom(1, 100_000_000).optional(),
  CVTRAIN_DATASET_MAX_UNCOMPRESSED_BYTES: intFrom(1, Number.MAX_SAFE_INTEGER).optional(),
  CVTRAIN_DATASET_MAX_ENTRY_BYTES: intFrom(1, Number.MAX_SAFE_INTEGER).optional(),
  CVTRAIN_DATASET_MAX_RATIO: intFrom(2, 100_000).optional(),
  // --- rate limits and sign-in throttling (src/lib/rate-limit.ts; README "Rate limits") ---
  // Token buckets in Redis shared by all replicas: a rate (sustained) and a burst (the bucket's
  // size, spendable at once after a pause). A rate of 0 turns that limit off.
  // Requests per second of each user and each API key, over HTTP and websocket operations together;
  // a dashboard polling hard stays far below it.
  CVTRAIN_RATE_LIMIT_RPS: z.coerce.number().min(0).max(1_000_000).default(50),
  CVTRAIN_RATE_LIMIT_BURST: intFrom(1, 10_000_000).default(200),
  // Requests per second without valid credentials, per client address (sign-in, sign-up, probes).
  CVTRAIN_ANON_RATE_LIMIT_RPS: z.coerce.number().min(0).max(1_000_000).default(20),
  CVTRAIN_ANON_RATE_LIMIT_BURST: intFrom(1, 10_000_000).default(100),
  // Sign-in and sign-up attempts per client address, each one counted (each costs ~50-120 ms of
  // scrypt CPU, so this bounds what one address can make the API spend), per minute.
  CVTRAIN_AUTH_ADDRESS_PER_MIN: z.coerce.number().min(0).max(1_000_000).default(30),
  CVTRAIN_AUTH_ADDRESS_BURST: intFrom(1, 1_000_000).default(30),
  // Failed sign-in and sign-up attempts per account (the normalised email), per minute: password
  // guessing against one account from many addresses. A correct password costs nothing here.
  CVTRAIN_AUTH_ACCOUNT_PER_MIN: z.coerce.number().min(0).max(1_000_000).default(1),
  CVTRAIN_AUTH_ACCOUNT_BURST: intFrom(1, 1_000_000).default(10),
  // Reverse proxies in front of the API whose X-Forwarded-For entries are believed (hop count).
  // 0: the socket's address is the client's, so a client cannot choose the address it is limited by.
  CVTRAIN_TRUST_PROXY: intFrom(0, 10).default(0),
  // --- storage (src/storage/; README "Storage") ---
  // Backend of the platform's own storage; organizations may bring their own (storage profiles).
  CVTRAIN_STORAGE: z.enum(['local', 's3', 'azure']).default('local'),
  // Base of absolute URLs given to clients (local storage links); default http://HOST:PORT as listening.
  CVTRAIN_PUBLIC_URL: httpUrl.optional(),
  // HMAC key of local storage links; generated in development like the other secrets.
  CVTRAIN_STORAGE_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  // Lifetime of presigned upload and download URLs; SigV4 allows at most 7 days.
  CVTRAIN_PRESIGN_TTL_S: intFrom(60, 7 * 24 * 3600).default(3600),
  // Largest upload through a local storage link (413 above it); 10 GiB.
  CVTRAIN_MAX_UPLOAD_BYTES: intFrom(1, Number.MAX_SAFE_INTEGER).default(10 * 1024 ** 3),
  // S3 and S3-compatible (MinIO, R2, GCS interoperability): bucket, region, and for non-AWS
  // services the endpoint, usually with path-style addressing.
  CVTRAIN_S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name').optional(),
  CVTRAIN_S3_REGION: z.string().regex(/^[a-z0-9-]{2,32}$/, 'must be a region such as us-east-1 (or "auto" for R2)').default('us-east-1'),
  CVTRAIN_S3_ENDPOINT: httpUrl.optional(),
  CVTRAIN_S3_FORCE_PATH_STYLE: z.enum(['0', '1', 'true', 'false']).default('0'),
  // Multipart part size: memory per upload is about 5 parts; S3 allows 10,000 parts (8 MiB: 78 GiB objects).
  CVTRAIN_S3_PART_SIZE_MB: intFrom(5, 5120).default(8),
  // Without these the AWS SDK's default chain applies (shared config, instance or task role).
  AWS_ACCESS_KEY_ID: z.string().min(1).optional(),
  AWS_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  AWS_SESSION_TOKEN: z.string().min(1).optional(),
  // Azure Blob Storage: account, shared key (needed to sign SAS URLs), container; the endpoint
  // defaults to https://<account>.blob.core.windows.net (Azurite: http://127.0.0.1:10000/devstoreaccount1).
  CVTRAIN_AZURE_ACCOUNT: z.string().regex(/^[a-z0-9]{3,24}$/, 'must be a storage account name').optional(),
  CVTRAIN_AZURE_ACCOUNT_KEY: z.string().min(1).optional(),
  CVTRAIN_AZURE_CONTAINER: z.string().regex(/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/, 'must be a container name').optional(),
  CVTRAIN_AZURE_ENDPOINT: httpUrl.optional(),
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
  /** GraphQL request limits (src/graphql/limits.ts); `enabled` false only in benchmarks. */
  requestLimits: { enabled: boolean; maxTokens: number; maxNesting: number; maxFieldRepeats: number; documentCacheBytes: number; anonymousIntrospection: boolean };
  dbPoolMax: number;
  responseCache: { maxEntries: number; maxBytes: number };
  embeddedPg: 'auto' | 'always' | 'never';
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  nodeToken: string;
  nodeHeartbeatMs: number;
  nodeOfflineMs: number;
  localGpuNode: boolean;
  workers: boolean;
  subscriptionReauthMs: number;
  /** Websocket limits (CVTRAIN_WS_*). */
  ws: {
    initTimeoutMs: number;
    maxConnectionsPerUser: number;
    maxConnectionsPerApiKey: number;
    maxSubscriptionsPerConnection: number;
  };
  storage: StorageSettings;
  /** Request rate limits and sign-in throttling (src/lib/rate-limit.ts). */
  rateLimits: RateLimitSettings;
  /** Overrides of the archive validator's limits; unset ones keep their defaults. */
  datasetLimits: {
    maxEntries?: number;
    maxTotalUncompressedBytes?: number;
    maxEntryUncompressedBytes?: number;
    maxCompressionRatio?: number;
  };
}

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/cvtrain';

interface GeneratedSecrets {
  secretKeys: string;
  jwtSecret: string;
  nodeToken?: string;
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
    nodeToken: randomBytes(24).toString('base64url'),
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
  let nodeToken = e.CVTRAIN_NODE_TOKEN;
  if (!secretKeys || !jwtSecret || !nodeToken) {
    if (e.NODE_ENV === 'production') {
      const missing = [
        !secretKeys && 'CVTRAIN_SECRET_KEYS',
        !jwtSecret && 'CVTRAIN_JWT_SECRET',
        !nodeToken && 'CVTRAIN_NODE_TOKEN',
      ].filter(Boolean);
      throw new ConfigError(missing.map((name) => `${name}: required when NODE_ENV=production`));
    }
    const dev = loadOrCreateDevSecrets(dataDir, warn);
    secretKeys ??= keyringSchema.parse(dev.secretKeys);
    jwtSecret ??= dev.jwtSecret;
    if (!nodeToken) {
      if (!dev.nodeToken) {
        // Secrets files from before the node token existed get one added.
        dev.nodeToken = randomBytes(24).toString('base64url');
        writeFileSync(path.join(dataDir, 'dev-secrets.json'), JSON.stringify(dev, null, 2), { mode: 0o600 });
      }
      nodeToken = dev.nodeToken;
    }
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
    requestLimits: {
      enabled: e.CVTRAIN_REQUEST_LIMITS === '1' || e.CVTRAIN_REQUEST_LIMITS === 'true',
      maxTokens: e.CVTRAIN_MAX_TOKENS,
      maxNesting: e.CVTRAIN_MAX_NESTING,
      maxFieldRepeats: e.CVTRAIN_MAX_FIELD_REPEATS,
      documentCacheBytes: e.CVTRAIN_DOCUMENT_CACHE_MB * 1024 * 1024,
      anonymousIntrospection:
        e.CVTRAIN_INTROSPECTION !== undefined
          ? e.CVTRAIN_INTROSPECTION === '1' || e.CVTRAIN_INTROSPECTION === 'true'
          : e.NODE_ENV !== 'production',
    },
    dbPoolMax: e.CVTRAIN_DB_POOL_MAX,
    responseCache: { maxEntries: e.CVTRAIN_RESPONSE_CACHE_ENTRIES, maxBytes: e.CVTRAIN_RESPONSE_CACHE_MB * 1024 * 1024 },
    embeddedPg: e.CVTRAIN_EMBEDDED_PG,
    logLevel: e.CVTRAIN_LOG_LEVEL,
    nodeToken,
    nodeHeartbeatMs: e.CVTRAIN_NODE_HEARTBEAT_MS,
    nodeOfflineMs: e.CVTRAIN_NODE_OFFLINE_MS,
    localGpuNode: e.CVTRAIN_LOCAL_GPU_NODE === '1' || e.CVTRAIN_LOCAL_GPU_NODE === 'true',
    workers: e.CVTRAIN_WORKERS === '1' || e.CVTRAIN_WORKERS === 'true',
    subscriptionReauthMs: e.CVTRAIN_SUBSCRIPTION_REAUTH_MS,
    ws: {
      initTimeoutMs: e.CVTRAIN_WS_INIT_TIMEOUT_MS,
      maxConnectionsPerUser: e.CVTRAIN_WS_MAX_CONNECTIONS_PER_USER,
      maxConnectionsPerApiKey: e.CVTRAIN_WS_MAX_CONNECTIONS_PER_API_KEY,
      maxSubscriptionsPerConnection: e.CVTRAIN_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION,
    },
    datasetLimits: Object.fromEntries(
      Object.entries({
        maxEntries: e.CVTRAIN_DATASET_MAX_ENTRIES,
        maxTotalUncompressedBytes: e.CVTRAIN_DATASET_MAX_UNCOMPRESSED_BYTES,
        maxEntryUncompressedBytes: e.CVTRAIN_DATASET_MAX_ENTRY_BYTES,
        maxCompressionRatio: e.CVTRAIN_DATASET_MAX_RATIO,
      }).filter(([, v]) => v !== undefined),
    ),
    rateLimits: {
      requests: { name: 'req', ratePerSecond: e.CVTRAIN_RATE_LIMIT_RPS, burst: e.CVTRAIN_RATE_LIMIT_BURST },
      anonymous: { name: 'anon', ratePerSecond: e.CVTRAIN_ANON_RATE_LIMIT_RPS, burst: e.CVTRAIN_ANON_RATE_LIMIT_BURST },
      authPerAddress: { name: 'auth-addr', ratePerSecond: e.CVTRAIN_AUTH_ADDRESS_PER_MIN / 60, burst: e.CVTRAIN_AUTH_ADDRESS_BURST },
      authPerAccount: { name: 'auth-acct', ratePerSecond: e.CVTRAIN_AUTH_ACCOUNT_PER_MIN / 60, burst: e.CVTRAIN_AUTH_ACCOUNT_BURST },
      trustProxy: e.CVTRAIN_TRUST_PROXY,
    },
    storage: storageSettings(e, dataDir, warn),
  };
}

function storageSettings(e: z.output<typeof envSchema>, dataDir: string, warn: (msg: string) => void): StorageSettings {
  const problems: string[] = [];
  let backend: BackendConfig;
  if (e.CVTRAIN_STORAGE === 's3') {
    if (!e.CVTRAIN_S3_BUCKET) problems.push('CVTRAIN_S3_BUCKET: required when CVTRAIN_STORAGE=s3');
    if (!e.AWS_ACCESS_KEY_ID !== !e.AWS_SECRET_ACCESS_KEY) {
      problems.push('AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: set both or neither');
    }
    backend = {
      kind: 's3',
      bucket: e.CVTRAIN_S3_BUCKET ?? '',
      region: e.CVTRAIN_S3_REGION,
      endpoint: e.CVTRAIN_S3_ENDPOINT,
      forcePathStyle: e.CVTRAIN_S3_FORCE_PATH_STYLE === '1' || e.CVTRAIN_S3_FORCE_PATH_STYLE === 'true',
      credentials:
        e.AWS_ACCESS_KEY_ID && e.AWS_SECRET_ACCESS_KEY
          ? { accessKeyId: e.AWS_ACCESS_KEY_ID, secretAccessKey: e.AWS_SECRET_ACCESS_KEY, sessionToken: e.AWS_SESSION_TOKEN }
          : undefined,
      partSizeBytes: e.CVTRAIN_S3_PART_SIZE_MB * 1024 * 1024,
    };
  } else if (e.CVTRAIN_STORAGE === 'azure') {
    for (const name of ['CVTRAIN_AZURE_ACCOUNT', 'CVTRAIN_AZURE_ACCOUNT_KEY', 'CVTRAIN_AZURE_CONTAINER'] as const) {
      if (!e[name]) problems.push(`${name}: required when CVTRAIN_STORAGE=azure`);
    }
    backend = {
      kind: 'azure',
      accountName: e.CVTRAIN_AZURE_ACCOUNT ?? '',
      accountKey: e.CVTRAIN_AZURE_ACCOUNT_KEY ?? '',
      container: e.CVTRAIN_AZURE_CONTAINER ?? '',
      endpoint: e.CVTRAIN_AZURE_ENDPOINT,
    };
  } else {
    backend = { kind: 'local', root: path.join(dataDir, 'storage') };
  }
  let secret = e.CVTRAIN_STORAGE_SECRET;
  // Only local storage signs its own links; S3 and Azure sign with their credentials.
  if (!secret && backend.kind === 'local') {
    if (e.NODE_ENV === 'production') {
      problems.push('CVTRAIN_STORAGE_SECRET: required when NODE_ENV=production and CVTRAIN_STORAGE=local');
    } else {
      secret = devStorageSecret(dataDir, warn);
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return {
    backend,
    publicUrl: e.CVTRAIN_PUBLIC_URL ?? null,
    secret: secret ? Buffer.from(secret, 'utf8') : randomBytes(32),
    presignTtlSeconds: e.CVTRAIN_PRESIGN_TTL_S,
    maxUploadBytes: e.CVTRAIN_MAX_UPLOAD_BYTES,
    s3PartSizeBytes: e.CVTRAIN_S3_PART_SIZE_MB * 1024 * 1024,
  };
}

/** The local-storage link secret from dev-secrets.json, added to it when the file predates it. */
function devStorageSecret(dataDir: string, warn: (msg: string) => void): string {
  const file = path.join(dataDir, 'dev-secrets.json');
  const dev = (existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {}) as { storageSecret?: string };
  if (dev.storageSecret) return dev.storageSecret;
  dev.storageSecret = randomBytes(48).toString('base64url');
  mkdirSync(dataDir, { recursive: true });
  // Written whole and renamed, so a process reading the file meanwhile never sees half of it.
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(temp, JSON.stringify(dev, null, 2), { mode: 0o600 });
  renameSync(temp, file);
  warn(`generated a development storage secret in ${file}; set CVTRAIN_STORAGE_SECRET in production`);
  return dev.storageSecret;
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
