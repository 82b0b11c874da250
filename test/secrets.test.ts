// Secrets never leak: the real server (`node --import tsx src/main.ts`, development mode, debug
// logging) is run in a child process, every response body and every line it writes to stdout and
// stderr is kept, and then neither those nor a full dump of the database may contain any secret
// that was sent (compute and storage profile credentials, API key, password, session token, server
// keys). Stored credentials are AES-256-GCM envelopes bound to their organization and row, and
// survive key rotation.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { dropDatabase, ensureDatabase } from '../src/db/orm.js';
import { SecretBox } from '../src/lib/secret-box.js';
import { PG_BASE } from './helpers/api.js';
import { freePort } from './helpers/processes.js';

const repoRoot = path.resolve(import.meta.dirname, '..');
const marker = randomBytes(4).toString('hex');

// --- The secrets: every one carries a marker no other value in the test has --------------------------

const PASSWORD = `pw-${marker}-correct horse battery`;
const SAGEMAKER_CREDS = {
  accessKeyId: `AKIA${marker.toUpperCase()}SAGEMAKER`,
  secretAccessKey: `sagemaker-secret-${marker}-wJalrXUtnFEMI`,
  sessionToken: `sagemaker-session-${marker}-FwoGZXIvYXdzEJr`,
};
const SAGEMAKER_CREDS_2 = {
  accessKeyId: `AKIA${marker.toUpperCase()}ROTATED01`,
  secretAccessKey: `sagemaker-rotated-${marker}-K7MDENGbPxRfiCY`,
};
const PEM_BODY = `MIIEv${marker}QIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7`;
const VERTEX_CREDS = {
  clientEmail: 'trainer@my-project-1.iam.gserviceaccount.com',
  privateKeyId: `pkid-${marker}-0123456789abcdef`,
  privateKey: `-----BEGIN PRIVATE KEY-----\n${PEM_BODY}\n${marker}AbCdEfGhIjKlMnOpQrStUvWxYz\n-----END PRIVATE KEY-----\n`,
};
const AZURE_CREDS = {
  tenantId: '11111111-2222-4333-8444-555555555555',
  clientId: '66666666-7777-4888-9999-000000000000',
  clientSecret: `azure-secret-${marker}-Q~8Xk`,
};
const K8S_CREDS = { token: `eyJhbGciOiJSUzI1NiIs-k8s-${marker}-token`, caCert: `-----BEGIN CERTIFICATE-----\nca-${marker}\n-----END CERTIFICATE-----` };
// Storage profiles (an organization's own bucket). Nothing listens at the endpoints: the server
// only stores, presigns and (for checkStorageProfile) tries to connect.
const STORAGE_S3_CREDS = {
  accessKeyId: `AKIA${marker.toUpperCase()}STORAGE`,
  secretAccessKey: `storage-secret-${marker}-bPxRfiCYEXAMPLEKEY`,
  sessionToken: `storage-session-${marker}-IQoJb3JpZ2luX2Vj`,
};
const STORAGE_S3_CREDS_2 = { accessKeyId: `AKIA${marker.toUpperCase()}STOROT2`, secretAccessKey: `storage-rotated-${marker}-wJalrXUtnFE` };
const STORAGE_AZURE_KEY = Buffer.from(`azure-storage-account-key-${marker}-0123456789`).toString('base64');
const STORAGE_CONFIGS = {
  S3: { bucket: 'secrets-bucket', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9', forcePathStyle: true },
  AZURE: { accountName: 'secretsacct', container: 'datasets', endpoint: 'http://127.0.0.1:9/secretsacct' },
};

const CONFIGS = {
  SAGEMAKER: { region: 'us-east-1', roleArn: 'arn:aws:iam::123456789012:role/train', instanceType: 'ml.g5.xlarge', image: 'cvtrain/trainer:1' },
  VERTEX_AI: { projectId: 'my-project-1', region: 'us-central1', machineType: 'g2-standard-8', image: 'cvtrain/trainer:1' },
  AZURE_ML: { subscriptionId: '00000000-0000-4000-8000-000000000001', resourceGroup: 'rg', workspace: 'ws', computeTarget: 'gpu' },
  KUBERNETES: { image: 'cvtrain/trainer:1', namespace: 'ml' },
};

const oldKey = randomBytes(32).toString('base64');
const newKey = randomBytes(32).toString('base64');
const jwtSecret = randomBytes(32).toString('base64url');
const storageSecret = randomBytes(32).toString('base64url');
const nodeToken = randomBytes(24).toString('base64url');

/** Strings that must appear nowhere: not in responses (but where shown on purpose), logs or the database. */
const secrets: Record<string, string> = {
  password: PASSWORD,
  'sagemaker accessKeyId': SAGEMAKER_CREDS.accessKeyId,
  'sagemaker secretAccessKey': SAGEMAKER_CREDS.secretAccessKey,
  'sagemaker sessionToken': SAGEMAKER_CREDS.sessionToken,
  'rotated accessKeyId': SAGEMAKER_CREDS_2.accessKeyId,
  'rotated secretAccessKey': SAGEMAKER_CREDS_2.secretAccessKey,
  'vertex privateKey body': PEM_BODY,
  'vertex privateKeyId': VERTEX_CREDS.privateKeyId,
  'azure clientSecret': AZURE_CREDS.clientSecret,
  'kubernetes token': K8S_CREDS.token,
  'kubernetes caCert': `ca-${marker}`,
  'rejected secretAccessKey': `rejected-${marker}-secret`,
  'rejected token': `rejected-${marker}-k8s`,
  'secret key (old)': oldKey,
  'secret key (new)': newKey,
  'jwt secret': jwtSecret,
  'storage link secret': storageSecret,
  'node token': nodeToken,
  // An access key id is an identifier rather than a secret, but it appears only where SigV4 puts
  // it: in the presigned URLs of that profile (X-Amz-Credential), checked separately below.
  'storage accessKeyId': STORAGE_S3_CREDS.accessKeyId,
  'storage secretAccessKey': STORAGE_S3_CREDS.secretAccessKey,
  'storage sessionToken': STORAGE_S3_CREDS.sessionToken,
  'rotated storage accessKeyId': STORAGE_S3_CREDS_2.accessKeyId,
  'rotated storage secretAccessKey': STORAGE_S3_CREDS_2.secretAccessKey,
  'azure storage accountKey': STORAGE_AZURE_KEY,
  'rejected storage secret': `rejected-${marker}-storage`,
};

// --- The server in a child process ---------------------------------------------------------------------

let dbUrl: string;
let dataDir: string;
let url: string;
let server: { child: ChildProcess; exited: Promise<number | null> } | null = null;
let output = '';
const responses: { label: string; text: string }[] = [];


async function startServer(secretKeys: string) {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      NODE_ENV: 'development',
      CVTRAIN_LOG_LEVEL: 'debug',
      DATABASE_URL: dbUrl,
      CVTRAIN_EMBEDDED_PG: 'never',
      HOST: '127.0.0.1',
      PORT: String(port),
      CVTRAIN_DATA_DIR: dataDir,
      CVTRAIN_REDIS_PREFIX: `cvtrain-test-${marker}:`,
      CVTRAIN_SECRET_KEYS: secretKeys,
      CVTRAIN_JWT_SECRET: jwtSecret,
      CVTRAIN_STORAGE_SECRET: storageSecret,
      CVTRAIN_NODE_TOKEN: nodeToken,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      if (output.includes(`:${port}/graphql`)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });
  url = `http://127.0.0.1:${port}/graphql`;
  server = { child, exited };
}

async function stopServer() {
  if (!server) return;
  server.child.kill('SIGTERM');
  await server.exited;
  server = null;
}

/** Sends one request and keeps the response text for the leak check. */
async function gql(label: string, query: string, variables: Record<string, unknown> = {}, token?: string) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const text = await res.text();
  responses.push({ label, text });
  return JSON.parse(text) as { data?: any; errors?: { message: string }[] };
}

/** A request whose secret sits where GraphQL expects another type: checked on its own below. */
const MISPLACED = 'credentials where a string goes';
const R = `__typename ... on Error { message } ... on ValidationError { field }`;
const CREATE_PROFILE = `mutation($input: CreateComputeProfileInput!) { createComputeProfile(input: $input) {
  ${R} ... on CreateComputeProfileSuccess { computeProfile { id provider hasCredentials credentialsHint config } } } }`;
const UPDATE_PROFILE = `mutation($id: ID!, $input: UpdateComputeProfileInput!) { updateComputeProfile(id: $id, input: $input) {
  ${R} ... on UpdateComputeProfileSuccess { computeProfile { id hasCredentials credentialsHint } } } }`;
const CREATE_STORAGE = `mutation($input: CreateStorageProfileInput!) { createStorageProfile(input: $input) {
  ${R} ... on CreateStorageProfileSuccess { storageProfile { id kind name config credentialsHint isDefault } } } }`;
const UPDATE_STORAGE = `mutation($id: ID!, $input: UpdateStorageProfileInput!) { updateStorageProfile(id: $id, input: $input) {
  ${R} ... on UpdateStorageProfileSuccess { storageProfile { id config credentialsHint isDefault } } } }`;

// --- What the test did, for the checks at the end --------------------------------------------------------

let token = '';
let orgId = '';
let apiKey = '';
let apiKeyId = '';
let otherOrgId = '';
/** Profile global id -> the credentials last stored for it. */
const stored = new Map<string, { provider: string; credentials: Record<string, unknown> }>();
let platformProfile = '';
let otherProfile = '';
/** Storage profile global id -> the credentials last stored for it. */
const storedStorage = new Map<string, { kind: string; name: string; credentials: Record<string, unknown> }>();
/** Labels of responses that carry a presigned upload URL of the S3 storage profile. */
const presignedLabels = new Set<string>();

async function dumpDatabase(): Promise<string> {
  const client = new pg.Client({ connectionString: dbUrl });
  await client.connect();
  try {
    const tables = await client.query<{ table_name: string }>(
      `select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE' order by 1`,
    );
    const parts: string[] = [];
    for (const { table_name } of tables.rows) {
      const rows = await client.query(`select * from ${pg.escapeIdentifier(table_name)}`);
      parts.push(`-- ${table_name}\n${rows.rows.map((r) => JSON.stringify(r)).join('\n')}`);
    }
    return parts.join('\n');
  } finally {
    await client.end();
  }
}

async function sql<T extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: dbUrl });
  await client.connect();
  try {
    return (await client.query<T>(text, params)).rows;
  } finally {
    await client.end();
  }
}

const local = (globalId: string) => decodeGlobalID(globalId).id;
/** The associated data the compute service binds each envelope to (see aad() in src/modules/compute/service.ts). */
const aad = (org: string, profile: string) => `compute_profiles:${local(org)}:${local(profile)}`;
/** The same for storage profiles (src/modules/storage/service.ts). */
const storageAad = (org: string, profile: string) => `storage_profiles:${local(org)}:${local(profile)}`;
const keyring = (value: string) => loadConfig({ NODE_ENV: 'test', CVTRAIN_SECRET_KEYS: value, CVTRAIN_JWT_SECRET: jwtSecret }).secretKeys;

function findLeaks(text: string, allowed: string[] = []): string[] {
  return Object.entries(secrets)
    .filter(([, value]) => !allowed.includes(value) && text.includes(value))
    .map(([name]) => name);
}

beforeAll(async () => {
  dbUrl = `${PG_BASE}/cvtrain_test_secrets_${process.pid}_${randomBytes(4).toString('hex')}`;
  dataDir = mkdtempSync(path.join(tmpdir(), 'cvtrain-secrets-'));
  await ensureDatabase(dbUrl);
  await startServer(`old:${oldKey}`);

  // Accounts and keys.
  const signUp = await gql('signUp', `mutation($input: SignUpInput!) { signUp(input: $input) { ${R}
    ... on SignUpSuccess { authPayload { token organization { id } } } } }`, {
    input: { email: `owner-${marker}@example.com`, password: PASSWORD, organizationName: 'Secrets Inc' },
  });
  token = signUp.data.signUp.authPayload.token;
  orgId = signUp.data.signUp.authPayload.organization.id;
  secrets['session token'] = token;
  const again = await gql('signUp twice', `mutation($input: SignUpInput!) { signUp(input: $input) { ${R} } }`, {
    input: { email: `owner-${marker}@example.com`, password: PASSWORD, organizationName: 'Again' },
  });
  expect(again.data.signUp.__typename).toBe('ValidationError');
  const wrongSignIn = await gql('signIn wrong', `mutation($input: SignInInput!) { signIn(input: $input) { ${R} } }`, {
    input: { email: `owner-${marker}@example.com`, password: `${PASSWORD}!` },
  });
  expect(wrongSignIn.data.signIn.__typename).toBe('AuthenticationError');
  const signIn = await gql('signIn', `mutation($input: SignInInput!) { signIn(input: $input) { ${R} ... on SignInSuccess { authPayload { token } } } }`, {
    input: { email: `OWNER-${marker}@example.com`, password: PASSWORD },
  });
  secrets['second session token'] = signIn.data.signIn.authPayload.token;

  const key = await gql('createApiKey', `mutation { createApiKey(input: { name: "ci", role: ADMIN }) { ${R}
    ... on CreateApiKeySuccess { createdApiKey { secret apiKey { id hint } } } } }`, {}, token);
  apiKey = key.data.createApiKey.createdApiKey.secret;
  apiKeyId = key.data.createApiKey.createdApiKey.apiKey.id;
  secrets['api key'] = apiKey;
  secrets['api key secret part'] = apiKey.split('_').slice(2).join('_');
  expect((await gql('viewer by key', '{ viewer { role apiKey { id hint } } }', {}, apiKey)).data.viewer.role).toBe('ADMIN');
  expect((await gql('wrong key', '{ viewer { role } }', {}, `${apiKey.slice(0, -3)}xyz`)).data.viewer).toBeNull();

  // One profile per provider with credentials, created as the user and as the key.
  const create = async (label: string, provider: keyof typeof CONFIGS, credentials: Record<string, unknown>, as = token) => {
    const res = await gql(label, CREATE_PROFILE, { input: { name: `${provider} ${label}`, provider, strategy: 'PREFERRED', config: CONFIGS[provider], credentials } }, as);
    const profile = res.data.createComputeProfile.computeProfile;
    expect(profile, JSON.stringify(res)).toBeTruthy();
    expect(profile.hasCredentials).toBe(true);
    stored.set(profile.id, { provider, credentials });
    return profile.id as string;
  };
  const sagemaker = await create('sagemaker', 'SAGEMAKER', SAGEMAKER_CREDS);
  await create('vertex', 'VERTEX_AI', VERTEX_CREDS, apiKey);
  await create('azure', 'AZURE_ML', AZURE_CREDS);
  await create('kubernetes', 'KUBERNETES', K8S_CREDS, apiKey);
  await create('kubeconfig', 'KUBERNETES', { kubeconfig: `apiVersion: v1\nusers:\n- user:\n    token: ${K8S_CREDS.token}\n` });
  platformProfile = (await gql('platform', CREATE_PROFILE, { input: { name: 'platform', provider: 'PLATFORM', strategy: 'QUEUE' } }, token)).data
    .createComputeProfile.computeProfile.id;

  // Replacing credentials, and reading everything back every way there is.
  const updated = await gql('update credentials', UPDATE_PROFILE, { id: sagemaker, input: { credentials: SAGEMAKER_CREDS_2 } }, token);
  expect(updated.data.updateComputeProfile.computeProfile.hasCredentials).toBe(true);
  stored.set(sagemaker, { provider: 'SAGEMAKER', credentials: SAGEMAKER_CREDS_2 });
  const everything = `{ computeProfiles(first: 100) { edges { node { id name provider config hasCredentials credentialsHint fallbackProfileIds } } }
    apiKeys { id name hint role } viewer { role user { email } organization { name } } }`;
  await gql('list as user', everything, {}, token);
  await gql('list as key', everything, {}, apiKey);
  for (const id of stored.keys()) {
    await gql('node', `query($id: ID!) { node(id: $id) { id ... on ComputeProfile { config credentialsHint hasCredentials } } }`, { id }, token);
  }

  // Failures that carry secrets in their input: each must answer without echoing them.
  const failures: [string, Record<string, unknown>][] = [
    ['bad region', { name: 'bad 1', provider: 'SAGEMAKER', strategy: 'QUEUE', config: { ...CONFIGS.SAGEMAKER, region: 'Mars' }, credentials: SAGEMAKER_CREDS }],
    ['bad access key id', { name: 'bad 2', provider: 'SAGEMAKER', strategy: 'QUEUE', config: CONFIGS.SAGEMAKER, credentials: { ...SAGEMAKER_CREDS, accessKeyId: `lower-${secrets['rejected secretAccessKey']}` } }],
    ['secret too long', { name: 'bad 3', provider: 'SAGEMAKER', strategy: 'QUEUE', config: CONFIGS.SAGEMAKER, credentials: { ...SAGEMAKER_CREDS, secretAccessKey: `${secrets['rejected secretAccessKey']}${'x'.repeat(300)}` } }],
    ['unknown credential key', { name: 'bad 4', provider: 'SAGEMAKER', strategy: 'QUEUE', config: CONFIGS.SAGEMAKER, credentials: { ...SAGEMAKER_CREDS, extra: secrets['rejected secretAccessKey'] } }],
    ['pem that is not a key', { name: 'bad 5', provider: 'VERTEX_AI', strategy: 'QUEUE', config: CONFIGS.VERTEX_AI, credentials: { ...VERTEX_CREDS, privateKey: PEM_BODY } }],
    ['credentials on PLATFORM', { name: 'bad 6', provider: 'PLATFORM', strategy: 'QUEUE', credentials: { token: secrets['rejected token'] } }],
    ['kubernetes token too short and extra', { name: 'bad 7', provider: 'KUBERNETES', strategy: 'QUEUE', config: CONFIGS.KUBERNETES, credentials: { token: secrets['rejected token'], kubeconfig: secrets['rejected token'] } }],
    ['duplicate name', { name: 'SAGEMAKER sagemaker', provider: 'SAGEMAKER', strategy: 'QUEUE', config: CONFIGS.SAGEMAKER, credentials: SAGEMAKER_CREDS }],
    ['missing fallback', { name: 'bad 8', provider: 'AZURE_ML', strategy: 'QUEUE', config: CONFIGS.AZURE_ML, credentials: AZURE_CREDS, fallbackProfileIds: ['Q29tcHV0ZVByb2ZpbGU6MDAwMDAwMDAtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAw'] }],
    ['missing fallback again (same name)', { name: 'bad 8', provider: 'AZURE_ML', strategy: 'QUEUE', config: CONFIGS.AZURE_ML, credentials: AZURE_CREDS, fallbackProfileIds: ['Q29tcHV0ZVByb2ZpbGU6MDAwMDAwMDAtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDAwMDAw'] }],
  ];
  for (const [label, input] of failures) {
    const res = await gql(label, CREATE_PROFILE, { input }, token);
    expect(res.data?.createComputeProfile?.__typename ?? 'error', label).not.toBe('CreateComputeProfileSuccess');
  }
  // GraphQL-level failures with secrets in the variables: a wrong type next to them, a wrong enum.
  await gql('wrong type', CREATE_PROFILE, { input: { name: 'bad 9', provider: 'SAGEMAKER', strategy: 'QUEUE', config: CONFIGS.SAGEMAKER, credentials: SAGEMAKER_CREDS, maxConcurrentJobs: 'many' } }, token);
  await gql('wrong enum', CREATE_PROFILE, { input: { name: 'bad 10', provider: 'AWS', strategy: 'QUEUE', credentials: SAGEMAKER_CREDS } }, token);
  await gql(MISPLACED, `mutation($input: SignInInput!) { signIn(input: $input) { ${R} } }`, { input: { email: `owner-${marker}@example.com`, password: SAGEMAKER_CREDS } });
  await gql('update with bad credentials', UPDATE_PROFILE, { id: sagemaker, input: { credentials: { ...SAGEMAKER_CREDS, accessKeyId: 'x' } } }, token);
  await gql('anonymous update', UPDATE_PROFILE, { id: sagemaker, input: { credentials: SAGEMAKER_CREDS } });
  await gql('syntax error with a secret', `{ viewer { role } ${SAGEMAKER_CREDS.secretAccessKey} `, {}, token);
  await gql('unknown field named like a secret', `{ ${secrets['rejected token'].replace(/-/g, '_')} }`, {}, token);

  // Storage profiles: created as the user and as the key, credentials replaced, read back every way.
  const createStorage = async (label: string, kind: 'S3' | 'AZURE', credentials: Record<string, unknown>, as = token) => {
    const name = `${kind} ${label}`;
    const res = await gql(label, CREATE_STORAGE, { input: { name, kind, config: STORAGE_CONFIGS[kind], credentials } }, as);
    const profile = res.data.createStorageProfile.storageProfile;
    expect(profile, JSON.stringify(res)).toBeTruthy();
    storedStorage.set(profile.id, { kind, name, credentials });
    return profile.id as string;
  };
  const s3Storage = await createStorage('storage s3', 'S3', STORAGE_S3_CREDS);
  const azureStorage = await createStorage('storage azure', 'AZURE', { accountKey: STORAGE_AZURE_KEY }, apiKey);
  const rotatedStorage = await gql('storage update credentials', UPDATE_STORAGE, { id: s3Storage, input: { credentials: STORAGE_S3_CREDS_2 } }, token);
  expect(rotatedStorage.data.updateStorageProfile.__typename).toBe('UpdateStorageProfileSuccess');
  storedStorage.set(s3Storage, { ...storedStorage.get(s3Storage)!, credentials: STORAGE_S3_CREDS_2 });
  const allStorage = '{ storageProfiles { id name kind config credentialsHint isDefault createdAt updatedAt } }';
  await gql('storage list as user', allStorage, {}, token);
  await gql('storage list as key', allStorage, {}, apiKey);
  for (const id of storedStorage.keys()) {
    await gql('storage node', `query($id: ID!) { node(id: $id) { id ... on StorageProfile { config credentialsHint } } }`, { id }, token);
  }
  const storageFailures: [string, Record<string, unknown>][] = [
    ['storage short access key id', { name: 'bad s1', kind: 'S3', config: STORAGE_CONFIGS.S3, credentials: { ...STORAGE_S3_CREDS, accessKeyId: 'AK' } }],
    ['storage secret too long', { name: 'bad s2', kind: 'S3', config: STORAGE_CONFIGS.S3, credentials: { ...STORAGE_S3_CREDS, secretAccessKey: `${secrets['rejected storage secret']}${'x'.repeat(300)}` } }],
    ['storage unknown credential key', { name: 'bad s3', kind: 'S3', config: STORAGE_CONFIGS.S3, credentials: { ...STORAGE_S3_CREDS, extra: secrets['rejected storage secret'] } }],
    ['storage bad bucket next to credentials', { name: 'bad s4', kind: 'S3', config: { ...STORAGE_CONFIGS.S3, bucket: 'Bad Bucket' }, credentials: STORAGE_S3_CREDS }],
    ['storage azure key not base64', { name: 'bad s5', kind: 'AZURE', config: STORAGE_CONFIGS.AZURE, credentials: { accountKey: `${secrets['rejected storage secret']}!` } }],
    ['storage azure key where s3 credentials go', { name: 'bad s6', kind: 'S3', config: STORAGE_CONFIGS.S3, credentials: { accountKey: STORAGE_AZURE_KEY } }],
    ['storage duplicate name', { name: 'S3 storage s3', kind: 'S3', config: STORAGE_CONFIGS.S3, credentials: STORAGE_S3_CREDS }],
  ];
  for (const [label, input] of storageFailures) {
    const res = await gql(label, CREATE_STORAGE, { input }, token);
    expect(res.data?.createStorageProfile?.__typename ?? 'error', label).not.toBe('CreateStorageProfileSuccess');
  }
  await gql('storage update with bad credentials', UPDATE_STORAGE, { id: s3Storage, input: { name: 'renamed', credentials: { ...STORAGE_S3_CREDS, secretAccessKey: 'short' } } }, token);
  await gql('storage anonymous update', UPDATE_STORAGE, { id: s3Storage, input: { credentials: STORAGE_S3_CREDS } });
  await gql('storage wrong type', CREATE_STORAGE, { input: { name: 'bad s7', kind: 'S3', config: STORAGE_CONFIGS.S3, credentials: STORAGE_S3_CREDS, isDefault: 'yes' } }, token);
  // The check connects with the credentials and fails (nothing listens); its reason must not carry
  // them. (S3 only: the Azure SDK's retries make a failing check take seconds.)
  for (const id of [s3Storage]) {
    const check = await gql('storage check', `mutation($id: ID!) { checkStorageProfile(id: $id) { ${R} ... on CheckStorageProfileSuccess { check { ok reason } } } }`, { id }, token);
    expect(check.data.checkStorageProfile.check.ok).toBe(false);
  }
  // Dataset uploads go to the default profile through presigned URLs: signed with the secret, never carrying it.
  const dataset = await gql('dataset', `mutation { createDataset(input: { name: "kept in s3", task: OBJECT_DETECTION }) { ... on CreateDatasetSuccess { dataset { id } } } }`, {}, token);
  const datasetId = dataset.data.createDataset.dataset.id;
  const CREATE_VERSION = `mutation($id: ID!) { createDatasetVersion(input: { datasetId: $id, format: YOLO, filename: "shapes.zip" }) { ${R}
    ... on CreateDatasetVersionSuccess { datasetVersionUpload { uploadUrl uploadHeaders } } } }`;
  for (const [label, id] of [['presign s3', s3Storage], ['presign azure', azureStorage]] as const) {
    await gql(`${label} default`, UPDATE_STORAGE, { id, input: { isDefault: true } }, token);
    const version = await gql(label, CREATE_VERSION, { id: datasetId }, token);
    const url = version.data.createDatasetVersion.datasetVersionUpload.uploadUrl as string;
    expect(url.startsWith(`http://127.0.0.1:9/${label.endsWith('s3') ? 'secrets-bucket' : 'secretsacct/datasets'}/orgs/`)).toBe(true);
    if (label.endsWith('s3')) {
      // SigV4: the access key id in X-Amz-Credential, a signature derived from the secret key.
      expect(new URL(url).searchParams.get('X-Amz-Credential')).toMatch(new RegExp(`^${STORAGE_S3_CREDS_2.accessKeyId}/`));
      presignedLabels.add(label);
    }
  }

  // A second organization, for the copied-ciphertext check.
  const other = await gql('signUp other', `mutation($input: SignUpInput!) { signUp(input: $input) { ... on SignUpSuccess { authPayload { token organization { id } } } } }`, {
    input: { email: `other-${marker}@example.com`, password: PASSWORD, organizationName: 'Other' },
  });
  otherOrgId = other.data.signUp.authPayload.organization.id;
  const otherCreated = await gql('other profile', CREATE_PROFILE, {
    input: { name: 'theirs', provider: 'KUBERNETES', strategy: 'QUEUE', config: CONFIGS.KUBERNETES, credentials: { token: `their-own-token-${marker}` } },
  }, other.data.signUp.authPayload.token);
  otherProfile = otherCreated.data.createComputeProfile.computeProfile.id;
  await stopServer();
}, 90_000);

afterAll(async () => {
  await stopServer();
  if (dbUrl) await dropDatabase(dbUrl);
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('nothing leaks', () => {
  it('the server was really exercised and logged at debug level', () => {
    expect(responses.length).toBeGreaterThan(30);
    expect(output).toMatch(/DEBUG/);
    expect(output).toMatch(/GraphQL API listening/);
    // Every failure above is an expected, typed one: an ERROR line would mean an unexpected error
    // (earlier, a compute-profile bug logged some; the leak check below covers any such line).
    expect(output).not.toMatch(/ERROR/);
  });

  it('no response body contains a secret (the API key only in the one response that creates it)', () => {
    const leaks = responses.filter(({ label }) => label !== MISPLACED).flatMap(({ label, text }) =>
      findLeaks(text, [
        ...(label === 'createApiKey' ? [apiKey, secrets['api key secret part']] : []),
        // SigV4 presigned URLs name the access key id (never the secret key) by design.
        ...(presignedLabels.has(label) ? [STORAGE_S3_CREDS_2.accessKeyId] : []),
      ])
        // Session tokens are the answer of signUp and signIn.
        .filter((name) => !(name.includes('session token') && label.startsWith('sign')))
        .map((name) => `${label}: ${name}`),
    );
    expect(leaks).toEqual([]);
  });

  it('a secret sent where another type is expected is not echoed in the error', () => {
    // GraphQL's variable coercion errors quote the rejected value; for credentials pasted into the
    // wrong field that value is a secret, which then lands in client and proxy logs.
    const { text } = responses.find((r) => r.label === MISPLACED)!;
    expect(text).toMatch(/errors/);
    expect(findLeaks(text)).toEqual([]);
  });

  it('the credentials hint shows identifiers only', () => {
    const hints = responses.flatMap(({ text }) => [...text.matchAll(/"credentialsHint":"([^"]*)"/g)].map((m) => m[1]));
    expect(hints.length).toBeGreaterThan(5);
    for (const hint of hints) expect(findLeaks(hint)).toEqual([]);
    // Only four characters at each end of an access key id.
    expect(hints).toContain(`AWS key ${SAGEMAKER_CREDS_2.accessKeyId.slice(0, 4)}…${SAGEMAKER_CREDS_2.accessKeyId.slice(-4)}`);
    expect(hints).toContain(`access key ${STORAGE_S3_CREDS_2.accessKeyId.slice(0, 4)}…${STORAGE_S3_CREDS_2.accessKeyId.slice(-4)}`);
    expect(hints).toContain('account key');
  });

  it('no log line contains a secret', () => {
    const leaks = output
      .split('\n')
      .flatMap((line, i) => findLeaks(line).map((name) => `line ${i + 1}: ${name}: ${line.slice(0, 200)}`));
    expect(leaks).toEqual([]);
  });

  it('the database holds no secret in clear', async () => {
    const dump = await dumpDatabase();
    expect(dump).toContain('credentials_ciphertext');
    expect(dump).toContain('-- storage_profiles');
    expect(findLeaks(dump)).toEqual([]);
    // The key's hash is stored, the key is not.
    expect(dump).toContain(createHash('sha256').update(secrets['api key secret part']).digest('hex'));
  });

  it('pg_dump --data-only finds no secret either', async () => {
    let dump: string;
    try {
      dump = (await promisify(execFile)('pg_dump', ['--data-only', '--no-owner', dbUrl], { maxBuffer: 64 * 1024 * 1024 })).stdout;
    } catch (err) {
      // Not every machine has pg_dump (or one matching the server); the JSON dump above covers the data.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    expect(dump).toMatch(/COPY public\.compute_profiles/);
    expect(findLeaks(dump)).toEqual([]);
  });
});

describe('stored credentials', () => {
  it('are an envelope under the current key that decrypts only with its own organization and row', async () => {
    const rows = await sql<{ id: string; organization_id: string; provider: string; credentials_ciphertext: string | null }>(
      'select id, organization_id, provider, credentials_ciphertext from compute_profiles',
    );
    const box = new SecretBox(keyring(`old:${oldKey}`));
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const [id, { credentials }] of stored) {
      const row = byId.get(local(id))!;
      expect(row.credentials_ciphertext).toMatch(/^v1\.old\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
      expect(JSON.parse(box.decrypt(row.credentials_ciphertext!, aad(orgId, id)))).toEqual(credentials);
      // Bound to its row: another row of the same organization, or another organization, cannot open it.
      expect(() => box.decrypt(row.credentials_ciphertext!, aad(orgId, platformProfile))).toThrow();
      expect(() => box.decrypt(row.credentials_ciphertext!, aad(otherOrgId, id))).toThrow();
      // Any change to the envelope is detected.
      const tampered = row.credentials_ciphertext!.slice(0, -2) + (row.credentials_ciphertext!.endsWith('AA') ? 'BB' : 'AA');
      expect(() => box.decrypt(tampered, aad(orgId, id))).toThrow();
    }
    expect(byId.get(local(platformProfile))!.credentials_ciphertext).toBeNull();
  });

  it('storage profile credentials are such envelopes too, bound to their organization and row', async () => {
    const rows = await sql<{ id: string; credentials_ciphertext: string }>('select id, credentials_ciphertext from storage_profiles');
    const box = new SecretBox(keyring(`old:${oldKey}`));
    const byId = new Map(rows.map((r) => [r.id, r.credentials_ciphertext]));
    const ids = [...storedStorage.keys()];
    expect(ids).toHaveLength(2);
    for (const [id, { credentials }] of storedStorage) {
      const envelope = byId.get(local(id))!;
      expect(envelope).toMatch(/^v1\.old\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
      expect(JSON.parse(box.decrypt(envelope, storageAad(orgId, id)))).toEqual(credentials);
      // Not under the other profile's row, another organization, or the compute profiles' binding.
      expect(() => box.decrypt(envelope, storageAad(orgId, ids.find((other) => other !== id)!))).toThrow();
      expect(() => box.decrypt(envelope, storageAad(otherOrgId, id))).toThrow();
      expect(() => box.decrypt(envelope, aad(orgId, id))).toThrow();
    }
  });

  it('a ciphertext copied into another row (or organization) fails to decrypt there', async () => {
    const box = new SecretBox(keyring(`old:${oldKey}`));
    const [source] = stored.keys();
    const [{ credentials_ciphertext: ciphertext }] = await sql<{ credentials_ciphertext: string }>(
      'select credentials_ciphertext from compute_profiles where id = $1',
      [local(source)],
    );
    for (const [targetOrg, target] of [
      [otherOrgId, otherProfile],
      [orgId, [...stored.keys()][1]],
    ]) {
      await sql('update compute_profiles set credentials_ciphertext = $1 where id = $2', [ciphertext, local(target)]);
      const [{ credentials_ciphertext: copied }] = await sql<{ credentials_ciphertext: string }>(
        'select credentials_ciphertext from compute_profiles where id = $1',
        [local(target)],
      );
      expect(copied).toBe(ciphertext);
      expect(() => box.decrypt(copied, aad(targetOrg, target))).toThrow();
    }
    // Put the second one back as it was.
    const second = [...stored.keys()][1];
    const fresh = box.encrypt(JSON.stringify(stored.get(second)!.credentials), aad(orgId, second));
    await sql('update compute_profiles set credentials_ciphertext = $1 where id = $2', [fresh, local(second)]);
  });
});

describe('key rotation', () => {
  it('old envelopes still decrypt after "new" is prepended, and new writes use "new"', async () => {
    await startServer(`new:${newKey},old:${oldKey}`);
    let newId: string;
    try {
      const created = await gql('after rotation', CREATE_PROFILE, {
        input: { name: 'after rotation', provider: 'AZURE_ML', strategy: 'QUEUE', config: CONFIGS.AZURE_ML, credentials: AZURE_CREDS },
      }, token);
      newId = created.data.createComputeProfile.computeProfile.id as string;
      // A profile written before the rotation, re-keyed by updating its credentials.
      const [rekeyed] = [...stored.keys()].filter((id) => stored.get(id)!.provider === 'VERTEX_AI');
      const updated = await gql('rekey', UPDATE_PROFILE, { id: rekeyed, input: { credentials: VERTEX_CREDS } }, token);
      expect(updated.data.updateComputeProfile.__typename).toBe('UpdateComputeProfileSuccess');
      // The server still accepts tokens and keys from before the restart.
      expect((await gql('viewer after rotation', '{ viewer { role } }', {}, apiKey)).data.viewer.role).toBe('ADMIN');
      // Storage profiles too: one re-keyed by new credentials, the other still readable under "old".
      const [s3Storage, azureStorage] = [...storedStorage.keys()];
      const rekeyedStorage = await gql('storage rekey', UPDATE_STORAGE, { id: s3Storage, input: { credentials: STORAGE_S3_CREDS } }, token);
      expect(rekeyedStorage.data.updateStorageProfile.__typename).toBe('UpdateStorageProfileSuccess');
      storedStorage.set(s3Storage, { ...storedStorage.get(s3Storage)!, credentials: STORAGE_S3_CREDS });
      // The Azure profile is the default (made so above): presigning for it decrypts its old-key envelope.
      const defaults = await gql('storage default after rotation', '{ storageProfiles { id isDefault } }', {}, token);
      expect(defaults.data.storageProfiles.filter((p: { isDefault: boolean }) => p.isDefault)).toEqual([{ id: azureStorage, isDefault: true }]);
      const dataset = await gql('dataset after rotation', `mutation { createDataset(input: { name: "after rotation", task: OBJECT_DETECTION }) { ... on CreateDatasetSuccess { dataset { id } } } }`, {}, token);
      const version = await gql('storage version after rotation', `mutation($id: ID!) { createDatasetVersion(input: { datasetId: $id, format: YOLO, filename: "shapes.zip" }) { __typename ... on CreateDatasetVersionSuccess { datasetVersionUpload { uploadUrl } } } }`, { id: dataset.data.createDataset.dataset.id }, token);
      expect(version.data.createDatasetVersion.datasetVersionUpload.uploadUrl).toMatch(/^http:\/\/127\.0\.0\.1:9\/secretsacct\/datasets\/orgs\/.*[?&]sig=/);
    } finally {
      await stopServer();
    }

    const rows = await sql<{ id: string; name: string; credentials_ciphertext: string | null }>(
      'select id, name, credentials_ciphertext from compute_profiles where organization_id = $1 and credentials_ciphertext is not null',
      [local(orgId)],
    );
    const rotated = new SecretBox(keyring(`new:${newKey},old:${oldKey}`));
    const onlyNew = new SecretBox(keyring(`new:${newKey}`));
    const keyIds = Object.fromEntries(rows.map((r) => [r.name, SecretBox.keyIdOf(r.credentials_ciphertext!)]));
    expect(keyIds['after rotation']).toBe('new');
    expect(keyIds['VERTEX_AI vertex']).toBe('new');
    expect(keyIds['SAGEMAKER sagemaker']).toBe('old');
    const expected = new Map([...stored].map(([id, { credentials }]) => [local(id), credentials]));
    expected.set(local(newId), AZURE_CREDS);
    expect(rows.map((r) => r.id)).toEqual(expect.arrayContaining([...expected.keys()]));
    for (const row of rows) {
      const profile = encodeGlobalID('ComputeProfile', row.id);
      const plain = JSON.parse(rotated.decrypt(row.credentials_ciphertext!, aad(orgId, profile)));
      if (expected.has(row.id)) expect(plain).toEqual(expected.get(row.id));
      if (SecretBox.keyIdOf(row.credentials_ciphertext!) === 'old') {
        // Dropping the old key too early fails loudly, naming the key.
        expect(() => onlyNew.decrypt(row.credentials_ciphertext!, aad(orgId, profile))).toThrow(/"old"/);
      }
    }
    const storageRows = await sql<{ id: string; credentials_ciphertext: string }>(
      'select id, credentials_ciphertext from storage_profiles where organization_id = $1',
      [local(orgId)],
    );
    const storageKeyIds = Object.fromEntries(storageRows.map((r) => [r.id, SecretBox.keyIdOf(r.credentials_ciphertext)]));
    const [s3Storage, azureStorage] = [...storedStorage.keys()];
    expect(storageKeyIds).toEqual({ [local(s3Storage)]: 'new', [local(azureStorage)]: 'old' });
    for (const row of storageRows) {
      const id = encodeGlobalID('StorageProfile', row.id);
      expect(JSON.parse(rotated.decrypt(row.credentials_ciphertext, storageAad(orgId, id)))).toEqual(storedStorage.get(id)!.credentials);
    }
    expect(findLeaks(output)).toEqual([]);
  });
});
