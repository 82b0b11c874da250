// Dataset versions for tests, made the way clients make them: createDatasetVersion, an HTTP PUT
// of a real archive to the presigned URL with the headers it names, finalizeDatasetVersion. The
// archives are the trainers' synthetic shapes datasets (`python -m cvtrain make-dataset`), built
// once per test process and kept in memory (a few KB each), so suites stay fast.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { signSessionToken } from '../../src/modules/orgs/credentials.js';
import type { TestApi } from './api.js';

export type DatasetFormat = 'YOLO' | 'COCO' | 'IMAGE_FOLDER';

const PYTHON = '/usr/bin/python3';
const TRAINERS = path.resolve(import.meta.dirname, '..', '..', 'trainers');

export interface DatasetArchive {
  format: DatasetFormat;
  filename: string;
  bytes: Buffer;
  sha256: string;
  sizeBytes: number;
  /** What the generated folder holds, counted here independently of the API's validator. */
  classNames: string[];
  splits: Record<string, { images: number; boxes: number }>;
}

export interface ArchiveOptions {
  images?: number;
  seed?: number;
  /** .tar.gz (default) or .zip. */
  container?: 'tar.gz' | 'zip';
  /** Changes the generated folder before it is archived (to break it). */
  mutate?: (root: string) => void;
  /** Required with `mutate`: names the variant in the per-process cache. */
  variant?: string;
}

const cache = new Map<string, DatasetArchive>();

/** A small .tar.gz (or .zip) of the shapes dataset in `format` (64 px images), cached per process. */
export function datasetArchive(format: DatasetFormat = 'YOLO', opts: ArchiveOptions = {}): DatasetArchive {
  if (opts.mutate && !opts.variant) throw new Error('datasetArchive: a mutated archive needs a variant name');
  const images = opts.images ?? 6;
  const seed = opts.seed ?? 1;
  const container = opts.container ?? 'tar.gz';
  const id = `${format}-${images}-${seed}-${opts.variant ?? 'plain'}-${container}`;
  const cached = cache.get(id);
  if (cached) return cached;
  // Built in a temporary folder that is gone before this returns; only the bytes are kept.
  const work = mkdtempSync(path.join(tmpdir(), 'cvtrain-test-archive-'));
  try {
    return build(format, id, work, images, seed, container, opts);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function build(
  format: DatasetFormat,
  id: string,
  work: string,
  images: number,
  seed: number,
  container: 'tar.gz' | 'zip',
  opts: ArchiveOptions,
): DatasetArchive {
  const root = path.join(work, 'dataset');
  execFileSync(
    PYTHON,
    ['-m', 'cvtrain', 'make-dataset', 'shapes', '--out', root, '--format', format.toLowerCase(), '--images', String(images), '--seed', String(seed), '--size', '64'],
    { env: { ...process.env, PYTHONPATH: TRAINERS }, stdio: 'pipe' },
  );
  opts.mutate?.(root);
  const expected = summarize(format, root);
  const file = `${root}.${container}`;
  // Entries named relative to the dataset root ("data.yaml", "images/train/..."), no "./" prefix.
  const entries = readdirSync(root).sort();
  if (container === 'zip') execFileSync(PYTHON, ['-m', 'zipfile', '-c', file, ...entries], { cwd: root });
  else execFileSync('tar', ['-czf', file, '-C', root, ...entries]);
  const bytes = readFileSync(file);
  const archive: DatasetArchive = {
    format,
    filename: `shapes-${format.toLowerCase()}.${container}`,
    bytes,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    sizeBytes: bytes.length,
    ...expected,
  };
  cache.set(id, archive);
  return archive;
}

const listDir = (dir: string) => readdirSync(dir).sort();
const isDir = (p: string) => statSync(p).isDirectory();

/** Class names and per-split counts read straight from the generated files. */
function summarize(format: DatasetFormat, root: string): Pick<DatasetArchive, 'classNames' | 'splits'> {
  const splits: Record<string, { images: number; boxes: number }> = {};
  if (format === 'YOLO') {
    const yaml = readFileSync(path.join(root, 'data.yaml'), 'utf8');
    const names = /^names:\s*\[(.*)\]\s*$/m.exec(yaml);
    if (!names) throw new Error(`unexpected data.yaml:\n${yaml}`);
    for (const split of listDir(path.join(root, 'images'))) {
      const labelsDir = path.join(root, 'labels', split);
      const boxes = listDir(labelsDir)
        .map((f) => readFileSync(path.join(labelsDir, f), 'utf8').split('\n').filter((l) => l.trim()).length)
        .reduce((a, b) => a + b, 0);
      splits[split] = { images: listDir(path.join(root, 'images', split)).length, boxes };
    }
    return { classNames: names[1].split(',').map((s) => s.trim()), splits };
  }
  if (format === 'COCO') {
    let classNames: string[] = [];
    for (const f of listDir(path.join(root, 'annotations'))) {
      const split = /^instances_(.+)\.json$/.exec(f)![1];
      const coco = JSON.parse(readFileSync(path.join(root, 'annotations', f), 'utf8')) as {
        images: unknown[];
        annotations: unknown[];
        categories: { id: number; name: string }[];
      };
      splits[split] = { images: coco.images.length, boxes: coco.annotations.length };
      classNames = [...coco.categories].sort((a, b) => a.id - b.id).map((c) => c.name);
    }
    return { classNames, splits };
  }
  // IMAGE_FOLDER: <split>/<class>/<image>; the training split's class folders are the classes.
  let classNames: string[] = [];
  for (const split of listDir(root).filter((d) => isDir(path.join(root, d)))) {
    const classes = listDir(path.join(root, split)).filter((d) => isDir(path.join(root, split, d)));
    if (split === 'train') classNames = classes;
    const images = classes.reduce((n, c) => n + listDir(path.join(root, split, c)).length, 0);
    splits[split] = { images, boxes: 0 };
  }
  return { classNames, splits };
}

// --- The public API ---------------------------------------------------------------------------------

const R = `__typename ... on Error { message } ... on ValidationError { field } ... on NotFoundError { resource id }`;
export const VERSION_FIELDS = `id version format filename status sha256 sizeBytes classNames
  splits { name images boxes } problems { path line message } finalizedAt createdAt dataset { id }`;

export const CREATE_VERSION = `mutation($input: CreateDatasetVersionInput!) { createDatasetVersion(input: $input) { ${R}
  ... on CreateDatasetVersionSuccess { datasetVersionUpload { uploadUrl uploadHeaders expiresAt version { ${VERSION_FIELDS} } } } } }`;
export const FINALIZE_VERSION = `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { ${R}
  ... on FinalizeDatasetVersionSuccess { datasetVersion { ${VERSION_FIELDS} } } } }`;

export interface DatasetVersionUpload {
  uploadUrl: string;
  uploadHeaders: Record<string, string>;
  expiresAt: string;
  version: { id: string; version: number; status: string; [k: string]: unknown };
}

async function mutation(api: TestApi, token: string, query: string, variables: Record<string, unknown>, field: string) {
  const res = await api.gql(query, variables, token);
  if (res.errors) throw new Error(`${field}: GraphQL errors ${JSON.stringify(res.errors)}`);
  return res.data[field];
}

/** createDatasetVersion; throws unless it succeeds. */
export async function createDatasetVersion(
  api: TestApi,
  token: string,
  datasetId: string,
  format: DatasetFormat,
  filename = `shapes-${format.toLowerCase()}.tar.gz`,
): Promise<DatasetVersionUpload> {
  const result = await mutation(api, token, CREATE_VERSION, { input: { datasetId, format, filename } }, 'createDatasetVersion');
  if (result.__typename !== 'CreateDatasetVersionSuccess') throw new Error(`createDatasetVersion: ${JSON.stringify(result)}`);
  return result.datasetVersionUpload;
}

/** PUTs the archive to the presigned URL with exactly the headers it asks for; throws on a non-2xx answer. */
export async function putArchive(upload: Pick<DatasetVersionUpload, 'uploadUrl' | 'uploadHeaders'>, bytes: Buffer): Promise<Response> {
  const res = await fetch(upload.uploadUrl, { method: 'PUT', headers: upload.uploadHeaders, body: new Uint8Array(bytes) });
  if (!res.ok) throw new Error(`upload answered ${res.status}: ${await res.text()}`);
  return res;
}

/** finalizeDatasetVersion, returning the result union as is. */
export async function finalizeDatasetVersion(api: TestApi, token: string, versionId: string) {
  return mutation(api, token, FINALIZE_VERSION, { id: versionId }, 'finalizeDatasetVersion');
}

/** The whole client flow; returns the finalized version (READY or INVALID, whatever the archive earns). */
export async function uploadDatasetVersion(
  api: TestApi,
  token: string,
  datasetId: string,
  archive: DatasetArchive = datasetArchive('YOLO'),
): Promise<{ upload: DatasetVersionUpload; version: any }> {
  const upload = await createDatasetVersion(api, token, datasetId, archive.format, archive.filename);
  await putArchive(upload, archive.bytes);
  const result = await finalizeDatasetVersion(api, token, upload.version.id);
  if (result.__typename !== 'FinalizeDatasetVersionSuccess') throw new Error(`finalizeDatasetVersion: ${JSON.stringify(result)}`);
  return { upload, version: result.datasetVersion };
}

/**
 * A READY version of the dataset through the public API, returned as its global ID. `token` must
 * act for the dataset's organization with role MEMBER or higher. Without one (scripts that kept
 * no token), a session token is signed for the organization's first OWNER with the server's JWT
 * secret: a shortcut to a credential only; the version itself still goes through the API.
 */
export async function seedReadyDatasetVersion(
  api: TestApi,
  datasetGlobalId: string,
  format: DatasetFormat = 'YOLO',
  token?: string,
): Promise<string> {
  const caller = token ?? (await ownerToken(api, datasetGlobalId));
  const { version } = await uploadDatasetVersion(api, caller, datasetGlobalId, datasetArchive(format));
  if (version.status !== 'READY') throw new Error(`seeded version is ${version.status}: ${JSON.stringify(version.problems)}`);
  return version.id;
}

async function ownerToken(api: TestApi, datasetGlobalId: string): Promise<string> {
  const [row] = await api.app.sql.query<{ user_id: string; organization_id: string }>(
    `select m.user_id, m.organization_id from datasets d join memberships m on m.organization_id = d.organization_id
     where d.id = ? and m.role = 'OWNER' order by m.created_at limit 1`,
    [decodeGlobalID(datasetGlobalId).id],
  );
  if (!row) throw new Error(`no OWNER found for dataset ${datasetGlobalId}`);
  const { token } = await signSessionToken(
    { userId: row.user_id, orgId: row.organization_id },
    api.app.config.jwtSecret,
    api.app.config.jwtTtlSeconds,
  );
  return token;
}
