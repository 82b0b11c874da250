// Hostile-client findings about text and ids (issue 12, findings 4 and 9), each its own test:
// control characters in any free text, NUL in credentials, malformed ids in node(id:) and in
// batched lookups, and the coercion error of an out-of-range Int. The API runs in development,
// where an unexpected error shows its message and stack: none of these may reach that point.
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectByIdsInOrg } from '../../src/db/rows.js';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from '../helpers/api.js';
import { datasetArchive, uploadDatasetVersion } from '../helpers/seed.js';

let api: TestApi;
let owner: SignedUp;
let modelId = '';
let datasetId = '';

beforeAll(async () => {
  api = await startTestApi({ env: { NODE_ENV: 'development' } });
  owner = await signUp(api, 'Text Org');
  modelId = ok<{ id: string }>(
    await api.gql(
      `mutation($input: CreateModelInput!) { createModel(input: $input) { __typename ... on CreateModelSuccess { model { id } } } }`,
      { input: { name: 'detector', task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn' } },
      owner.token,
    ),
    'createModel',
    'model',
  ).id;
  datasetId = ok<{ id: string }>(
    await api.gql(
      `mutation($input: CreateDatasetInput!) { createDataset(input: $input) { __typename ... on CreateDatasetSuccess { dataset { id } } } }`,
      { input: { name: 'shapes', task: 'OBJECT_DETECTION' } },
      owner.token,
    ),
    'createDataset',
    'dataset',
  ).id;
});
afterAll(async () => api?.close());

const R = `__typename ... on Error { message } ... on ValidationError { field }`;
const PROFILE_ID = encodeGlobalID('ComputeProfile', '00000000-0000-4000-8000-0000000000aa');
const STORAGE_ID = encodeGlobalID('StorageProfile', '00000000-0000-4000-8000-0000000000bb');
const SAGEMAKER_CONFIG = { region: 'us-east-1', roleArn: 'arn:aws:iam::123456789012:role/train', instanceType: 'ml.g5.xlarge', image: 'cvtrain/trainer:1' };
const SAGEMAKER_CREDENTIALS = { accessKeyId: 'AKIAVALIDATIONTEST01', secretAccessKey: 'validation-secret-access-key' };
const S3_STORAGE = {
  kind: 'S3',
  config: { bucket: 'text-bucket', region: 'eu-central-1', endpoint: 'http://127.0.0.1:9', forcePathStyle: true },
  credentials: { accessKeyId: 'AKIAVALIDATIONSTORE1', secretAccessKey: 'validation-storage-secret-0123' },
};
const MODEL_INPUT = { task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn' };

/** [case, mutation field, document, variables, expected field]. */
type Case = [string, string, string, () => Record<string, unknown>, string];
const m = (field: string, signature: string, args: string) => `mutation(${signature}) { ${field}(${args}) { ${R} } }`;

// One string per entry point, with NUL (U+0000), a C1 line break (U+0085) or CSI (U+009B).
const CASES: Case[] = [
  ['signUp email', 'signUp', m('signUp', '$input: SignUpInput!', 'input: $input'), () => ({ input: { email: 'a\u0000b@example.com', password: 'correct horse battery', organizationName: 'X' } }), 'input.email'],
  ['signUp organization name (C1)', 'signUp', m('signUp', '$input: SignUpInput!', 'input: $input'), () => ({ input: { email: 'c1@example.com', password: 'correct horse battery', organizationName: 'Acme\u0085Evil' } }), 'input.organizationName'],
  ['signUp password with NUL', 'signUp', m('signUp', '$input: SignUpInput!', 'input: $input'), () => ({ input: { email: 'nul@example.com', password: 'correct horse\u0000battery', organizationName: 'X' } }), 'input.password'],
  ['signIn email', 'signIn', m('signIn', '$input: SignInInput!', 'input: $input'), () => ({ input: { email: `${owner.email}\u0000`, password: owner.password } }), 'input.email'],
  ['API key name (C1 CSI)', 'createApiKey', m('createApiKey', '$input: CreateApiKeyInput!', 'input: $input'), () => ({ input: { name: 'ci\u009b2J', role: 'VIEWER' } }), 'input.name'],
  ['member email', 'addMember', m('addMember', '$input: AddMemberInput!', 'input: $input'), () => ({ input: { email: 'x\u0000@example.com', role: 'VIEWER' } }), 'input.email'],
  ['model name (C1 NEL)', 'createModel', m('createModel', '$input: CreateModelInput!', 'input: $input'), () => ({ input: { ...MODEL_INPUT, name: 'm\u0085x' } }), 'input.name'],
  ['model description with NUL', 'createModel', m('createModel', '$input: CreateModelInput!', 'input: $input'), () => ({ input: { ...MODEL_INPUT, name: `m ${randomUUID()}`, description: 'a\u0000b' } }), 'input.description'],
  ['model description with a carriage return', 'createModel', m('createModel', '$input: CreateModelInput!', 'input: $input'), () => ({ input: { ...MODEL_INPUT, name: `m ${randomUUID()}`, description: 'line\rline' } }), 'input.description'],
  ['model architecture', 'createModel', m('createModel', '$input: CreateModelInput!', 'input: $input'), () => ({ input: { ...MODEL_INPUT, name: `m ${randomUUID()}`, architecture: 'resnet\u0000' } }), 'input.architecture'],
  ['updateModel description', 'updateModel', m('updateModel', '$id: ID!, $input: UpdateModelInput!', 'id: $id, input: $input'), () => ({ id: modelId, input: { description: '\u0000' } }), 'input.description'],
  ['dataset name', 'createDataset', m('createDataset', '$input: CreateDatasetInput!', 'input: $input'), () => ({ input: { name: 'd\u001b[31m', task: 'OBJECT_DETECTION' } }), 'input.name'],
  ['dataset description', 'createDataset', m('createDataset', '$input: CreateDatasetInput!', 'input: $input'), () => ({ input: { name: `d ${randomUUID()}`, description: 'x\u009by', task: 'OBJECT_DETECTION' } }), 'input.description'],
  ['dataset filename', 'createDatasetVersion', m('createDatasetVersion', '$input: CreateDatasetVersionInput!', 'input: $input'), () => ({ input: { datasetId, format: 'YOLO', filename: 'a\u0000.zip' } }), 'input.filename'],
  ['PLATFORM gpuType', 'createComputeProfile', m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input'), () => ({ input: { name: 'p1', provider: 'PLATFORM', strategy: 'QUEUE', config: { gpuType: 'A100\u0000' } } }), 'input.config.gpuType'],
  ['SAGEMAKER image', 'createComputeProfile', m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input'), () => ({ input: { name: 'p2', provider: 'SAGEMAKER', strategy: 'CHEAPEST', config: { ...SAGEMAKER_CONFIG, image: 'img\u0000x' }, credentials: SAGEMAKER_CREDENTIALS } }), 'input.config.image'],
  ['SAGEMAKER endpoint (C1)', 'createComputeProfile', m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input'), () => ({ input: { name: 'p3', provider: 'SAGEMAKER', strategy: 'CHEAPEST', config: { ...SAGEMAKER_CONFIG, endpoint: 'https://x.example.com/\u0085' }, credentials: SAGEMAKER_CREDENTIALS } }), 'input.config.endpoint'],
  ['KUBERNETES nodeSelector value', 'createComputeProfile', m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input'), () => ({ input: { name: 'p4', provider: 'KUBERNETES', strategy: 'PREFERRED', config: { image: 'i', nodeSelector: { pool: 'gpu\u0000' } }, credentials: { token: 'k8s-service-account-token' } } }), 'input.config.nodeSelector.pool'],
  ['a JSON key', 'createComputeProfile', m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input'), () => ({ input: { name: 'p5', provider: 'PLATFORM', strategy: 'QUEUE', config: { 'gpu\u0000Type': 'A100' } } }), 'input.config'],
  ['a JSON string in a list', 'createComputeProfile', m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input'), () => ({ input: { name: 'p6', provider: 'PLATFORM', strategy: 'QUEUE', config: { gpus: 1, extra: [{ a: ['ok', 'b\u0000'] }] } } }), 'input.config.extra.0.a.1'],
  ['updateComputeProfile name', 'updateComputeProfile', m('updateComputeProfile', '$id: ID!, $input: UpdateComputeProfileInput!', 'id: $id, input: $input'), () => ({ id: PROFILE_ID, input: { name: 'n\u0000' } }), 'input.name'],
  ['storage endpoint', 'createStorageProfile', m('createStorageProfile', '$input: CreateStorageProfileInput!', 'input: $input'), () => ({ input: { name: 's1', ...S3_STORAGE, config: { ...S3_STORAGE.config, endpoint: 'http://127.0.0.1:9/\u0000' } } }), 'input.config.endpoint'],
  ['updateStorageProfile config', 'updateStorageProfile', m('updateStorageProfile', '$id: ID!, $input: UpdateStorageProfileInput!', 'id: $id, input: $input'), () => ({ id: STORAGE_ID, input: { config: { bucket: 'b\u0085' } } }), 'input.config.bucket'],
  ['training architecture', 'trainModel', m('trainModel', '$m: ID!, $input: TrainModelInput!', 'modelId: $m, input: $input'), () => ({ m: modelId, input: { datasetVersionId: encodeGlobalID('DatasetVersion', randomUUID()), config: { epochs: 1, architecture: 'fasterrcnn\u0000' } } }), 'input.config.architecture'],
];

async function tableCounts(): Promise<Record<string, number>> {
  const rows = await api.app.sql.query<{ t: string; n: string }>(
    `select 'models' t, count(*) n from models union all select 'datasets', count(*) from datasets
     union all select 'compute_profiles', count(*) from compute_profiles union all select 'storage_profiles', count(*) from storage_profiles
     union all select 'users', count(*) from users union all select 'api_keys', count(*) from api_keys
     union all select 'training_sessions', count(*) from training_sessions union all select 'dataset_versions', count(*) from dataset_versions`,
  );
  return Object.fromEntries(rows.map((r) => [r.t, Number(r.n)]));
}

describe('finding 4 and 9: control characters in free text are refused with a ValidationError naming the field', () => {
  it.each(CASES)('%s', async (_name, field, query, variables, expectedField) => {
    const before = await tableCounts();
    const res = await api.gql(query, variables(), owner.token);
    expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
    expect(res.data[field]).toMatchObject({ __typename: 'ValidationError', field: expectedField });
    expect(res.data[field].message).toMatch(/control characters/);
    expect(await tableCounts()).toEqual(before);
  });

  it('the same strings written as literals in the document are refused too', async () => {
    const res = await api.gql(
      `mutation { createModel(input: {name: "literal", description: "a\\u0000b", task: OBJECT_DETECTION, framework: TORCHVISION,
        architecture: "fasterrcnn_mobilenet_v3_large_320_fpn"}) { ${R} } }`,
      {},
      owner.token,
    );
    expect(res.data.createModel).toMatchObject({ __typename: 'ValidationError', field: 'input.description' });
    const json = await api.gql(
      `mutation { createComputeProfile(input: {name: "lit", provider: PLATFORM, strategy: QUEUE, config: {gpuType: "x\\u0085"}}) { ${R} } }`,
      {},
      owner.token,
    );
    expect(json.data.createComputeProfile).toMatchObject({ __typename: 'ValidationError', field: 'input.config.gpuType' });
  });

  it('arguments of queries are checked too: a cursor with NUL is a BAD_USER_INPUT naming the argument', async () => {
    const res = await api.gql(`query($after: String) { models(first: 2, after: $after) { totalCount } }`, { after: 'abc\u0000' }, owner.token);
    expect(res.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT', field: 'after' } });
    expect(res.errors?.[0].message).toMatch(/^after: must not contain control characters/);
  });

  it('descriptions keep their line breaks and tabs; credentials keep PEM and CRLF line breaks', async () => {
    const res = await api.gql(
      `mutation($input: CreateModelInput!) { createModel(input: $input) { ${R} ... on CreateModelSuccess { model { description } } } }`,
      { input: { ...MODEL_INPUT, name: `multi ${randomUUID()}`, description: 'first line\n\tsecond line' } },
      owner.token,
    );
    expect(res.data.createModel.model.description).toBe('first line\n\tsecond line');
    const vertex = await api.gql(
      m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input'),
      {
        input: {
          name: `vertex ${randomUUID()}`,
          provider: 'VERTEX_AI',
          strategy: 'CHEAPEST',
          config: { projectId: 'my-project-1', region: 'us-central1', machineType: 'g2-standard-8', image: 'cvtrain/trainer:1' },
          credentials: { clientEmail: 'trainer@my-project-1.iam.gserviceaccount.com', privateKey: '-----BEGIN PRIVATE KEY-----\r\nMIIE\r\n-----END PRIVATE KEY-----\r\n' },
        },
      },
      owner.token,
    );
    expect(vertex.data.createComputeProfile.__typename).toBe('CreateComputeProfileSuccess');
  });
});

describe('finding 4: NUL in credentials', () => {
  const MARKER = 'marker-7f3a9c-secret';
  it.each([
    ['compute profile', () => ({ query: m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input'), field: 'createComputeProfile', input: { name: `c ${randomUUID()}`, provider: 'SAGEMAKER', strategy: 'CHEAPEST', config: SAGEMAKER_CONFIG, credentials: { ...SAGEMAKER_CREDENTIALS, secretAccessKey: `${MARKER}\u0000tail` } } })],
    ['storage profile', () => ({ query: m('createStorageProfile', '$input: CreateStorageProfileInput!', 'input: $input'), field: 'createStorageProfile', input: { name: `s ${randomUUID()}`, ...S3_STORAGE, credentials: { ...S3_STORAGE.credentials, secretAccessKey: `${MARKER}\u0000tail` } } })],
  ])('%s: a typed ValidationError that does not echo the secret', async (_name, make) => {
    const { query, field, input } = make();
    const before = await tableCounts();
    const res = await api.gql(query, { input }, owner.token);
    expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
    expect(res.data[field]).toMatchObject({ __typename: 'ValidationError', field: 'input.credentials.secretAccessKey' });
    expect(JSON.stringify(res)).not.toContain(MARKER);
    expect(await tableCounts()).toEqual(before);
  });
});

describe('finding 9: global ids are checked for shape before any SQL', () => {
  const NODE = (alias: string, id: string) => `${alias}: node(id: "${id}") { id ... on Model { name } }`;

  it.each([
    ['a Model id whose local part is no UUID', encodeGlobalID('Model', 'nope')],
    ['an id of a type that does not exist', encodeGlobalID('Foo', randomUUID())],
    ['an id of a type that is no node', encodeGlobalID('ValidationError', randomUUID())],
    ['an id with a NUL in it', encodeGlobalID('Model', `${randomUUID()}\u0000`)],
  ])('%s: a BAD_USER_INPUT error for that field, and the good id batched with it still loads', async (_name, bad) => {
    const res = await api.gql(`{ ${NODE('good', modelId)} ${NODE('bad', bad)} }`, {}, owner.token);
    expect(res.data.good).toEqual({ id: modelId, name: 'detector' });
    expect(res.data.bad).toBeNull();
    expect(res.errors).toHaveLength(1);
    expect(res.errors![0]).toMatchObject({ path: ['bad'], message: 'id: is not a valid ID', extensions: { code: 'BAD_USER_INPUT', field: 'id' } });
    // Nothing of the server leaks: no SQL, no stack, no file paths (development mode shows them for unexpected errors).
    expect(JSON.stringify(res.errors)).not.toMatch(/uuid|stack|\.ts:|node_modules|Unexpected error/);
  });

  it('a batch loader given a key that is no UUID answers the others instead of failing the statement', async () => {
    const rows = await selectByIdsInOrg<{ id: string; name: string }>(
      api.app.sql,
      'models',
      localPart(owner.orgId),
      ['nope', localPart(modelId), "'; drop table models; --"],
    );
    expect([...rows.keys()]).toEqual([localPart(modelId)]);
  });
});

describe('finding 9: an Int out of range names the real variable and field', () => {
  it('epochs: 1e12 inside $input', async () => {
    const res = await api.gql(
      `mutation($m: ID!, $input: TrainModelInput!) { trainModel(modelId: $m, input: $input) { __typename } }`,
      { m: modelId, input: { datasetVersionId: encodeGlobalID('DatasetVersion', randomUUID()), config: { epochs: 1e12 } } },
      owner.token,
    );
    expect(res.errors).toHaveLength(1);
    const [e] = res.errors!;
    expect(e.message).toMatch(/^Variable "\$input" got invalid value at "input\.config\.epochs"; Int cannot represent non 32-bit signed integer value/);
    expect(e.message).not.toContain('$epochs');
    expect(e.message).not.toContain('1000000000000');
    expect(e.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'input.config.epochs' });
  });

  it('an unknown enum value deep in a list names its index', async () => {
    const res = await api.gql(
      `mutation($m: ID!, $input: TrainModelInput!) { trainModel(modelId: $m, input: $input) { __typename } }`,
      { m: modelId, input: { datasetVersionId: encodeGlobalID('DatasetVersion', randomUUID()), config: { epochs: 1, exportFormats: ['ONNX', 'PICKLE'] } } },
      owner.token,
    );
    expect(res.errors?.[0].message).toMatch(/^Variable "\$input" got invalid value at "input\.config\.exportFormats\.1"/);
    expect(res.errors?.[0].extensions).toMatchObject({ field: 'input.config.exportFormats.1' });
  });
});

describe('finding 4: the gpu-node API refuses control characters in what a node reports', () => {
  const register = (body: object) =>
    fetch(new URL('/node/v1/register', api.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${api.app.config.nodeToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const gpu = { index: 0, name: 'NVIDIA H200', uuid: 'GPU-1', memoryTotalMiB: 1, memoryUsedMiB: 0, utilizationPct: 0, temperatureC: 30, powerW: 70 };

  it.each([
    ['host', { host: 'gpu\u0000box' }, 'host'],
    ['GPU name (C1)', { gpus: [{ ...gpu, name: 'H200\u0085' }] }, 'gpus.0.name'],
    ['version', { version: '1.0\u001b[2J' }, 'version'],
  ])('%s: 400 naming the field, nothing registered', async (_name, change, field) => {
    const res = await register({ nodeId: `node-${randomUUID()}`, host: 'box', version: '1', slots: 1, gpus: [gpu], ...change });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(new RegExp(`^${field.replace(/\./g, '\\.')}: must not contain control characters`));
  });
});

describe('finding 4: class names in an uploaded archive', () => {
  it.each([
    ['YOLO data.yaml with NUL', 'YOLO', 'yolo-nul', (root: string) => setYoloNames(root, '"cir\\0cle"')],
    ['YOLO data.yaml with C1', 'YOLO', 'yolo-c1', (root: string) => setYoloNames(root, '"cir\\x85cle"')],
    ['COCO category with NUL', 'COCO', 'coco-nul', (root: string) => setCocoName(root, 'cir\u0000cle')],
  ] as const)('%s: INVALID with a problem naming the class, not an unexpected error', async (_name, format, variant, mutate) => {
    const archive = datasetArchive(format, { variant, mutate });
    const { version } = await uploadDatasetVersion(api, owner.token, datasetId, archive);
    expect(version.status).toBe('INVALID');
    expect(version.problems.map((p: { message: string }) => p.message).join('\n')).toMatch(/class name 0 .*control characters/);
    for (const name of version.classNames ?? []) expect(name).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });
});

function setYoloNames(root: string, first: string) {
  const file = path.join(root, 'data.yaml');
  const yaml = readFileSync(file, 'utf8');
  writeFileSync(file, yaml.replace(/^names:\s*\[([^,\]]*)/m, `names: [${first}`));
}

function setCocoName(root: string, name: string) {
  for (const f of readdirSync(path.join(root, 'annotations'))) {
    const file = path.join(root, 'annotations', f);
    const coco = JSON.parse(readFileSync(file, 'utf8'));
    const first = [...coco.categories].sort((a: { id: number }, b: { id: number }) => a.id - b.id)[0];
    first.name = name;
    writeFileSync(file, JSON.stringify(coco));
  }
}

function localPart(globalId: string): string {
  return Buffer.from(globalId, 'base64').toString('utf8').split(':')[1];
}
