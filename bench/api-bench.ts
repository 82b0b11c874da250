// npm run bench: API throughput on loopback, measured in one run against a server in its own process.
//   1. a trivial `{ __typename }` query
//   2. a page of 50 training sessions with model, dataset version and latest epoch
// Both carry the same bearer token, 50 connections, the same duration. Target (issue 2): the page
// reaches >= 50% of the trivial query's requests/s with p99 < 100 ms.
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import autocannon from 'autocannon';
import pg from 'pg';
import { dropDatabase, ensureDatabase } from '../src/db/orm.js';
import { freePort, gql } from './lib.js';

const PG_BASE = process.env.CVTRAIN_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432';
const DURATION = Number(process.env.BENCH_DURATION_S ?? 15);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);

const PAGE_QUERY = `query Page { trainingSessions(first: 50) { edges { node {
  id status createdAt progress { epoch totalEpochs fraction }
  model { id name architecture }
  datasetVersion { id version format }
  latestEpoch { epoch metrics }
} } } }`;

async function seed(url: string, dbUrl: string) {
  const email = `bench-${randomBytes(4).toString('hex')}@example.com`;
  const { signUp } = await gql(
    url,
    `mutation($i: SignUpInput!) { signUp(input: $i) { ... on SignUpSuccess { authPayload { token organization { id } } } } }`,
    { i: { email, password: 'benchmark password', organizationName: 'Bench' } },
  );
  const token: string = signUp.authPayload.token;
  const models: string[] = [];
  const datasets: string[] = [];
  for (let i = 0; i < 5; i++) {
    const m = await gql(
      url,
      `mutation($i: CreateModelInput!) { createModel(input: $i) { ... on CreateModelSuccess { model { id } } } }`,
      { i: { name: `model-${i}`, task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'ssdlite320_mobilenet_v3_large' } },
      token,
    );
    models.push(m.createModel.model.id);
    const d = await gql(
      url,
      `mutation($i: CreateDatasetInput!) { createDataset(input: $i) { ... on CreateDatasetSuccess { dataset { id } } } }`,
      { i: { name: `dataset-${i}`, task: 'OBJECT_DETECTION' } },
      token,
    );
    datasets.push(d.createDataset.dataset.id);
  }
  // The benchmark measures reads: dataset versions and epoch rows are inserted directly rather
  // than uploaded and trained for (epochs only ever come from trainers through the ingester).
  const db = new pg.Client({ connectionString: dbUrl });
  await db.connect();
  const orgId = Buffer.from(signUp.authPayload.organization.id, 'base64').toString().split(':')[1];
  const versions: string[] = [];
  for (const ds of datasets) {
    const id = randomUUID();
    const datasetId = Buffer.from(ds, 'base64').toString().split(':')[1];
    await db.query(
      `insert into dataset_versions (id, created_at, updated_at, organization_id, dataset_id, version, format, filename,
         archive_key, status, class_names, splits) values ($1, now(), now(), $2, $3, 1, 'YOLO', 'd.zip', 'k', 'READY', '["a","b"]', '{}')`,
      [id, orgId, datasetId],
    );
    versions.push(Buffer.from(`DatasetVersion:${id}`).toString('base64'));
  }
  for (let i = 0; i < 60; i++) {
    const s = await gql(
      url,
      `mutation($m: ID!, $i: TrainModelInput!) { trainModel(modelId: $m, input: $i) { ... on TrainModelSuccess { trainingSession { id } } } }`,
      { m: models[i % 5], i: { datasetVersionId: versions[i % 5], config: { epochs: 20, batchSize: 16 } } },
      token,
    );
    const sessionId = Buffer.from(s.trainModel.trainingSession.id, 'base64').toString().split(':')[1];
    for (let epoch = 1; epoch <= 10; epoch++) {
      await db.query(
        `insert into epoch_metrics (id, created_at, updated_at, organization_id, session_id, epoch, metrics)
         values ($1, now(), now(), $2, $3, $4, $5)`,
        [randomUUID(), orgId, sessionId, epoch, JSON.stringify({ train_loss: 1 / epoch, mAP: epoch / 20, mAP50: epoch / 12, lr: 0.01 })],
      );
    }
  }
  // A live database has planner statistics (autovacuum analyzes it); this machine's PostgreSQL
  // runs with autovacuum off, so freshly seeded tables would be planned blind.
  await db.query('analyze');
  await db.end();
  return token;
}

async function load(url: string, token: string, title: string, query: string) {
  const opts = {
    url,
    method: 'POST' as const,
    connections: CONNECTIONS,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query }),
  };
  // Warm-up: JIT, connection pools, parse/validate caches.
  await autocannon({ ...opts, duration: 3 });
  process.stderr.write(`\n${title}\n`);
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({ ...opts, duration: DURATION }, (err, res) => (err ? reject(err) : resolve(res)));
    autocannon.track(instance, { renderLatencyTable: false, renderResultsTable: false });
  });
  if (result.non2xx || result.errors) throw new Error(`${title}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return { title, rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, total: result.requests.total };
}

async function main() {
  const dbUrl = `${PG_BASE}/cvtrain_bench_${randomBytes(3).toString('hex')}`;
  await ensureDatabase(dbUrl);
  const port = await freePort();
  const profileArgs = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  // Extra Node flags for the server only (e.g. GC settings), as in bench/platform-bench.ts.
  const extraArgs = (process.env.BENCH_API_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const server = spawn(process.execPath, [...profileArgs, ...extraArgs, '--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env,
      NODE_ENV: 'production',
      PORT: String(port),
      DATABASE_URL: dbUrl,
      CVTRAIN_LOG_LEVEL: 'warn',
      CVTRAIN_SECRET_KEYS: `bench:${randomBytes(32).toString('base64')}`,
      CVTRAIN_JWT_SECRET: randomBytes(32).toString('base64url'),
      CVTRAIN_NODE_TOKEN: randomBytes(24).toString('base64url'),
      CVTRAIN_STORAGE_SECRET: randomBytes(32).toString('base64url'),
      CVTRAIN_LOCAL_GPU_NODE: '0',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}/graphql`;
  try {
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) break;
      } catch {
        if (i > 100) throw new Error('server did not start');
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    process.stderr.write('seeding 60 sessions x 10 epochs...\n');
    const token = await seed(url, dbUrl);
    const trivial = await load(url, token, 'trivial { __typename }', '{ __typename }');
    const page = await load(url, token, 'page of 50 sessions', PAGE_QUERY);
    // Where the page's cost goes: the same 50 rows with no relations and no metrics.
    const idsOnly = await load(url, token, '50 session ids only', '{ trainingSessions(first: 50) { edges { node { id } } } }');
    const ratio = page.rps / trivial.rps;
    const lines = [
      `Machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; ${CONNECTIONS} connections, ${DURATION} s per run, server NODE_ENV=production in its own process.`,
      '',
      '| query | req/s | p50 ms | p99 ms | requests |',
      '|---|---:|---:|---:|---:|',
      ...[trivial, page, idsOnly].map((r) => `| ${r.title} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.total} |`),
      '',
      `Page / trivial: ${(ratio * 100).toFixed(1)}% (target >= 50%); page p99 ${page.p99} ms (target < 100 ms).`,
    ];
    console.log(lines.join('\n'));
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    // BENCH_KEEP_DB=1 keeps the seeded database for EXPLAIN ANALYZE and pgbench.
    if (process.env.BENCH_KEEP_DB === '1') process.stderr.write(`kept ${dbUrl}\n`);
    else await dropDatabase(dbUrl);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
