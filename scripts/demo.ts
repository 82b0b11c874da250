// npm run demo: a client of the public API only. Signs up, makes a small synthetic dataset with
// the trainers' generator, uploads it, creates a model and a PLATFORM profile, trains, and shows
// each epoch as it arrives over graphql-ws, then the final mAP50, how long it trained, and the
// artifact URLs. It trains cvdet_n, the trainers' own YOLO-style detector (framework CVTRAIN),
// at 160 px: on a 2-core CPU that ends with a model that finds the shapes in a few minutes
// (bench/RESULTS.md, "cvdet"), where the torchvision detectors still detect nothing.
//
//   CVTRAIN_API_URL   the API (default http://127.0.0.1:4000)
//   DEMO_EPOCHS       epochs to train (default 8)
//   DEMO_IMAGES       synthetic images, a quarter of them for validation (default 320)
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const API = (process.env.CVTRAIN_API_URL ?? 'http://127.0.0.1:4000').replace(/\/$/, '');
const EPOCHS = Number(process.env.DEMO_EPOCHS ?? 8);
const IMAGES = Number(process.env.DEMO_IMAGES ?? 320);
const ARCHITECTURE = 'cvdet_n';
const PYTHON = process.env.CVTRAIN_PYTHON ?? '/usr/bin/python3';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const step = (s: string) => console.log(`${bold('==>')} ${s}`);

async function gql<T = any>(query: string, variables: Record<string, unknown> = {}, token?: string): Promise<T> {
  const res = await fetch(`${API}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data?: T; errors?: { message: string }[] };
  if (body.errors?.length) throw new Error(body.errors.map((e) => e.message).join('; '));
  return body.data as T;
}

/** Unwraps a mutation result union, failing with the typed error's message. */
function success<T>(result: { __typename: string; message?: string; field?: string } & Record<string, unknown>, field: string): T {
  if (!result.__typename.endsWith('Success')) {
    throw new Error(`${result.__typename}${result.field ? ` (${result.field})` : ''}: ${result.message}`);
  }
  return result[field] as T;
}

const E = '__typename ... on Error { message } ... on ValidationError { field }';

function progressBar(fraction: number, width = 28) {
  const filled = Math.round(Math.max(0, Math.min(1, fraction)) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`;
}

const fmt = (v: unknown) => (typeof v === 'number' ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(4)) : '-');

async function main() {
  const health = await fetch(`${API}/healthz`).catch(() => null);
  if (!health?.ok) throw new Error(`no cvtrain API at ${API} (start it with npm start, or set CVTRAIN_API_URL)`);

  step(`signing up at ${API}`);
  const email = `demo-${randomBytes(3).toString('hex')}@example.com`;
  const signUp = await gql(
    `mutation($i: SignUpInput!) { signUp(input: $i) { ${E} ... on SignUpSuccess { authPayload { token organization { name } } } } }`,
    { i: { email, password: 'demo password 1234', organizationName: 'Demo' } },
  );
  const token = success<{ token: string }>(signUp.signUp, 'authPayload').token;

  const work = mkdtempSync(path.join(tmpdir(), 'cvtrain-demo-'));
  try {
    step(`generating a synthetic detection dataset (${IMAGES} images)`);
    const datasetDir = path.join(work, 'shapes');
    const gen = spawnSync(
      PYTHON,
      ['-m', 'cvtrain', 'make-dataset', 'shapes', '--out', datasetDir, '--format', 'yolo', '--images', String(IMAGES), '--seed', '1', '--size', '160'],
      { env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'trainers') }, encoding: 'utf8' },
    );
    if (gen.status !== 0) throw new Error(`dataset generator failed:\n${gen.stderr}`);
    const archive = path.join(work, 'shapes.tar.gz');
    execFileSync('tar', ['-czf', archive, '-C', datasetDir, '.']);
    const size = statSync(archive).size;

    step('creating the dataset and uploading a version');
    const ds = await gql(
      `mutation($i: CreateDatasetInput!) { createDataset(input: $i) { ${E} ... on CreateDatasetSuccess { dataset { id } } } }`,
      { i: { name: 'shapes', task: 'OBJECT_DETECTION' } },
      token,
    );
    const datasetId = success<{ id: string }>(ds.createDataset, 'dataset').id;
    const created = await gql(
      `mutation($i: CreateDatasetVersionInput!) { createDatasetVersion(input: $i) { ${E}
        ... on CreateDatasetVersionSuccess { datasetVersionUpload { version { id } uploadUrl uploadHeaders expiresAt } } } }`,
      { i: { datasetId, format: 'YOLO', filename: 'shapes.tar.gz' } },
      token,
    );
    const upload = success<{ version: { id: string }; uploadUrl: string; uploadHeaders: Record<string, string> }>(
      created.createDatasetVersion,
      'datasetVersionUpload',
    );
    const put = await fetch(upload.uploadUrl, {
      method: 'PUT',
      headers: { ...upload.uploadHeaders, 'content-length': String(size) },
      body: readFileSync(archive),
    });
    if (!put.ok) throw new Error(`upload failed: HTTP ${put.status} ${await put.text()}`);
    const fin = await gql(
      `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { ${E}
        ... on FinalizeDatasetVersionSuccess { datasetVersion { id status classNames splits { name images boxes } problems { path line message } } } } }`,
      { id: upload.version.id },
      token,
    );
    const version = success<{ id: string; status: string; classNames: string[]; splits: { name: string; images: number }[]; problems: unknown[] }>(
      fin.finalizeDatasetVersion,
      'datasetVersion',
    );
    if (version.status !== 'READY') throw new Error(`dataset is ${version.status}: ${JSON.stringify(version.problems)}`);
    console.log(`    READY: classes ${version.classNames.join(', ')}; ${version.splits.map((s) => `${s.name} ${s.images}`).join(', ')} images`);

    step('creating a model and a PLATFORM compute profile');
    const model = await gql(
      `mutation($i: CreateModelInput!) { createModel(input: $i) { ${E} ... on CreateModelSuccess { model { id } } } }`,
      { i: { name: 'shapes-detector', task: 'OBJECT_DETECTION', framework: 'CVTRAIN', architecture: ARCHITECTURE } },
      token,
    );
    const modelId = success<{ id: string }>(model.createModel, 'model').id;
    const profile = await gql(
      `mutation($i: CreateComputeProfileInput!) { createComputeProfile(input: $i) { ${E} ... on CreateComputeProfileSuccess { computeProfile { id } } } }`,
      { i: { name: 'platform GPUs', provider: 'PLATFORM', strategy: 'QUEUE', isDefault: true } },
      token,
    );
    const profileId = success<{ id: string }>(profile.createComputeProfile, 'computeProfile').id;

    step(`training ${ARCHITECTURE} for ${EPOCHS} epochs at 160 px`);
    const train = await gql(
      `mutation($m: ID!, $i: TrainModelInput!) { trainModel(modelId: $m, input: $i) { ${E}
        ... on TrainModelSuccess { trainingSession { id status } } } }`,
      {
        m: modelId,
        i: {
          datasetVersionId: version.id,
          computeProfileId: profileId,
          // AdamW at 0.002 with a one-epoch warm-up: what a from-scratch YOLO-style detector trains
          // fastest with over a few hundred steps (bench/detector_budget.py).
          config: {
            epochs: EPOCHS,
            batchSize: 16,
            imageSize: 160,
            learningRate: 0.002,
            optimizer: 'ADAMW',
            weightDecay: 0.0005,
            warmupEpochs: 1,
            seed: 1,
            checkpointEvery: 1,
          },
        },
      },
      token,
    );
    const session = success<{ id: string; status: string }>(train.trainModel, 'trainingSession');
    console.log(`    session ${session.id}: ${session.status}`);

    const ws = createClient({
      url: `${API.replace(/^http/, 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
    });
    const header = `${'epoch'.padEnd(7)}${'loss'.padEnd(10)}${'mAP'.padEnd(10)}${'mAP50'.padEnd(10)}${'s/epoch'.padEnd(9)}img/s`;
    console.log(`\n    ${header}\n    ${'-'.repeat(header.length)}`);
    let lastLine = '';
    let epochSeconds = 0; // training + validation, summed over the epochs as they arrive
    const render = (line: string) => {
      if (process.stdout.isTTY) process.stdout.write(`\r\x1b[2K    ${line}`);
      else if (line !== lastLine) console.log(`    ${line}`);
      lastLine = line;
    };
    const final = await new Promise<{ status: string; error: { message: string } | null }>((resolve, reject) => {
      let status = 'QUEUED';
      let fraction = 0;
      ws.subscribe<{ trainingEpochs: { epoch: number; metrics: Record<string, number> } }>(
        { query: `subscription($s: ID!) { trainingEpochs(sessionId: $s) { epoch metrics } }`, variables: { s: session.id } },
        {
          next: ({ data }) => {
            if (!data) return;
            const { epoch, metrics } = data.trainingEpochs;
            if (typeof metrics.seconds === 'number') epochSeconds += metrics.seconds;
            if (process.stdout.isTTY) process.stdout.write('\r\x1b[2K');
            console.log(
              `    ${String(epoch).padEnd(7)}${fmt(metrics.train_loss).padEnd(10)}${fmt(metrics.mAP).padEnd(10)}${fmt(metrics.mAP50).padEnd(10)}${fmt(metrics.seconds).padEnd(9)}${fmt(metrics.images_per_sec)}`,
            );
          },
          error: reject,
          complete: () => undefined,
        },
      );
      ws.subscribe<{ trainingSessionUpdated: { status: string; progress: { fraction: number }; error: { message: string } | null } }>(
        {
          query: `subscription($s: ID!) { trainingSessionUpdated(id: $s) { status progress { fraction } error { message } } }`,
          variables: { s: session.id },
        },
        {
          next: ({ data }) => {
            if (!data) return;
            const s = data.trainingSessionUpdated;
            status = s.status;
            fraction = s.progress.fraction;
            render(`${progressBar(fraction)} ${status}`);
            if (['COMPLETED', 'FAILED', 'CANCELLED'].includes(status)) resolve({ status, error: s.error });
          },
          error: reject,
          complete: () => undefined,
        },
      );
    });
    if (process.stdout.isTTY) process.stdout.write('\n');
    await ws.dispose();
    if (final.status !== 'COMPLETED') throw new Error(`the session ended ${final.status}: ${final.error?.message ?? ''}`);

    step('done: the trained model and its files');
    const result = await gql(
      `query($id: ID!) { trainingSession(id: $id) { status startedAt finishedAt latestEpoch { epoch metrics }
        model { name versions { version metrics } } artifacts { kind sizeBytes url } } }`,
      { id: session.id },
      token,
    );
    const s = result.trainingSession;
    const m = s.latestEpoch?.metrics ?? {};
    const wall = s.startedAt && s.finishedAt ? (Date.parse(s.finishedAt) - Date.parse(s.startedAt)) / 1000 : null;
    console.log(`    model ${s.model.name} version ${s.model.versions[0]?.version ?? '?'}`);
    console.log(
      `    final mAP50 ${fmt(m.mAP50)} (mAP@.5:.95 ${fmt(m.mAP)}) after ${s.latestEpoch?.epoch ?? '?'} epochs; ` +
        `trained ${epochSeconds.toFixed(0)} s (epochs incl. validation; ${wall === null ? '?' : `${wall.toFixed(0)} s`} ` +
        'from start to finish with start-up and export)',
    );
    for (const a of s.artifacts as { kind: string; sizeBytes: number; url: string }[]) {
      console.log(`    ${a.kind.padEnd(11)} ${(a.sizeBytes / 1e6).toFixed(1).padStart(7)} MB  ${a.url}`);
    }
    console.log(`\n    Sign in as ${email} / "demo password 1234" in GraphiQL at ${API}/graphql to look around.`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
});
