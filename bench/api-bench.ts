// npm run bench: API throughput on loopback, measured in one run against servers in their own
// processes (one at a time), on one seeded database:
//   1. a trivial `{ __typename }` query
//   2. a page of 50 training sessions with model, dataset version and latest epoch, as a polling
//      dashboard sees it: answered from the response cache while nothing in the organization changes
//   3. the same page while sessions of the organization report progress (BENCH_WRITES_PER_S
//      writes a second, as the event ingester makes them), so part of the requests execute
//   4. the same page from a server with the response cache off: every request executes
//   5. the 50 session ids only, cache off: the floor of executing a page
// All carry the same bearer token, 50 connections, the same duration. Target (issue 2): the page
// reaches >= 50% of the trivial query's requests/s with p99 < 100 ms.
// Then (issue 12) every limit of the API on against the same build with them off (document limits
// and rate limits; LIMITS_OFF): two servers, loads
// alternating between them (BENCH_LIMIT_ROUNDS rounds; 0 skips it, BENCH_LIMITS_ONLY=1 runs only
// that). Target: on loses <= 5%.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { dropDatabase, ensureDatabase } from '../src/db/orm.js';
import { benchSecrets, gql, startBenchApi } from './lib.js';

const PG_BASE = process.env.CVTRAIN_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432';
const DURATION = Number(process.env.BENCH_DURATION_S ?? 15);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const WRITES_PER_S = Number(process.env.BENCH_WRITES_PER_S ?? 10);
const LIMIT_ROUNDS = Number(process.env.BENCH_LIMIT_ROUNDS ?? 2);

// The API's limits as the bench runs them. On: at values this load cannot reach (one token at
// thousands of requests a second would trip the per-user default of 50/s), with the default burst,
// which sets how many requests share one Redis round trip (src/lib/rate-limit.ts), so each request
// costs what it costs under the defaults. Off: what the on/off comparison measures against.
const LIMITS_ON: Record<string, string> = { CVTRAIN_RATE_LIMIT_RPS: '1000000' };
const LIMITS_OFF: Record<string, string> = {
  // Token, nesting and repeat limits, the byte-bounded document cache, anonymous introspection.
  CVTRAIN_REQUEST_LIMITS: '0',
  CVTRAIN_RATE_LIMIT_RPS: '0',
  CVTRAIN_ANON_RATE_LIMIT_RPS: '0',
  CVTRAIN_AUTH_ADDRESS_PER_MIN: '0',
  CVTRAIN_AUTH_ACCOUNT_PER_MIN: '0',
};

export const PAGE_QUERY = `query Page { trainingSessions(first: 50) { edges { node {
  id status createdAt progress { epoch totalEpochs fraction }
  model { id name architecture }
  datasetVersion { id version format }
  latestEpoch { epoch metrics }
} } } }`;

export async function seed(url: string, dbUrl: string) {
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
  return { token, orgId };
}

/**
 * Progress updates of the organization's sessions at a steady rate, each its own transaction as
 * the ingester writes them, from another connection (as from another process).
 */
function progressWriter(dbUrl: string, orgId: string, perSecond: number) {
  const db = new pg.Client({ connectionString: dbUrl });
  let writes = 0;
  let timer: NodeJS.Timeout | undefined;
  return {
    async start() {
      await db.connect();
      const ids = (await db.query('select id from training_sessions where organization_id = $1', [orgId])).rows.map((r) => r.id);
      timer = setInterval(() => {
        const id = ids[writes % ids.length];
        writes++;
        void db.query(
          `update training_sessions set progress_fraction = least(1, progress_fraction + 0.001), updated_at = now() where id = $1`,
          [id],
        );
      }, 1000 / perSecond);
    },
    async stop() {
      clearInterval(timer);
      await db.end();
      return writes;
    },
  };
}

/** CPU seconds a process has used (Linux /proc; user + system, 100 ticks a second); NaN elsewhere. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

export async function load(url: string, token: string, title: string, query: string, pid?: number) {
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
  const cpuBefore = cpuSeconds(pid);
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({ ...opts, duration: DURATION }, (err, res) => (err ? reject(err) : resolve(res)));
    autocannon.track(instance, { renderLatencyTable: false, renderResultsTable: false });
  });
  if (result.non2xx || result.errors) throw new Error(`${title}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  // The server's CPU per request: steadier than requests/s on a machine whose other load varies.
  const cpuUsPerRequest = ((cpuSeconds(pid) - cpuBefore) * 1e6) / result.requests.total;
  return { title, rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, total: result.requests.total, cpuUsPerRequest };
}

const secrets = benchSecrets();

function startApi(dbUrl: string, env: Record<string, string> = {}) {
  const profileArgs = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  return startBenchApi(
    { ...process.env, NODE_ENV: 'production', DATABASE_URL: dbUrl, CVTRAIN_LOG_LEVEL: 'warn', ...secrets, CVTRAIN_LOCAL_GPU_NODE: '0', ...LIMITS_ON, ...env },
    profileArgs,
  );
}

/** Limits on and off, same build, same run: loads alternate between two servers, order swapped each round. */
async function limitsOnOff(dbUrl: string, token: string) {
  const on = await startApi(dbUrl);
  const off = await startApi(dbUrl, LIMITS_OFF);
  const lines: string[] = [];
  try {
    for (const [title, query] of [
      ['trivial { __typename }', '{ __typename }'],
      ['page of 50 sessions (response cache, no writes)', PAGE_QUERY],
    ] as const) {
      const rps = { on: [] as number[], off: [] as number[] };
      const cpu = { on: [] as number[], off: [] as number[] };
      for (let round = 0; round < LIMIT_ROUNDS; round++) {
        for (const mode of round % 2 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
          const api = mode === 'on' ? on : off;
          const r = await load(api.url, token, `${title}, limits ${mode}, round ${round + 1}`, query, api.child.pid);
          rps[mode].push(r.rps);
          cpu[mode].push(r.cpuUsPerRequest);
        }
      }
      const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
      const change = (a: number[], b: number[]) => `${((sum(a) / sum(b) - 1) * 100).toFixed(1)}%`;
      const each = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(' · ');
      lines.push(
        `| ${title} | ${each(rps.on)} | ${each(rps.off)} | ${change(rps.on, rps.off)} | ${each(cpu.on)} | ${each(cpu.off)} | ${change(cpu.on, cpu.off)} |`,
      );
    }
  } finally {
    await on.stop();
    await off.stop();
  }
  return [
    '',
    `Limits on (${Object.entries(LIMITS_ON).map(([k, v]) => `${k}=${v}`).join(' ')}, other limits at their defaults) against off (${Object.keys(LIMITS_OFF).join(', ')} = 0), alternating, ${LIMIT_ROUNDS} rounds (target: on loses <= 5%):`,
    '',
    '| query | on req/s, each round | off req/s | req/s on vs off | on server CPU µs/request | off µs/request | CPU on vs off |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...lines,
  ];
}

async function main() {
  const dbUrl = `${PG_BASE}/cvtrain_bench_${randomBytes(3).toString('hex')}`;
  await ensureDatabase(dbUrl);
  let api = await startApi(dbUrl);
  try {
    process.stderr.write('seeding 60 sessions x 10 epochs...\n');
    const { token, orgId } = await seed(api.url, dbUrl);
    // BENCH_LIMITS_ONLY=1: only the limits on/off comparison.
    if (process.env.BENCH_LIMITS_ONLY === '1') {
      await api.stop();
      console.log((await limitsOnOff(dbUrl, token)).join('\n'));
      return;
    }
    const trivial = await load(api.url, token, 'trivial { __typename }', '{ __typename }');
    const page = await load(api.url, token, 'page of 50 sessions (response cache, no writes)', PAGE_QUERY);
    const writer = progressWriter(dbUrl, orgId, WRITES_PER_S);
    await writer.start();
    const pageWritten = await load(api.url, token, `page of 50 sessions (response cache, ${WRITES_PER_S} writes/s)`, PAGE_QUERY);
    const writes = await writer.stop();
    await api.stop();
    api = await startApi(dbUrl, { CVTRAIN_RESPONSE_CACHE_ENTRIES: '0' });
    const pageUncached = await load(api.url, token, 'page of 50 sessions (response cache off)', PAGE_QUERY);
    // Where the page's cost goes: the same 50 rows with no relations and no metrics.
    const idsOnly = await load(
      api.url,
      token,
      '50 session ids only (response cache off)',
      '{ trainingSessions(first: 50) { edges { node { id } } } }',
    );
    const pct = (r: { rps: number }) => `${((r.rps / trivial.rps) * 100).toFixed(1)}%`;
    const rows = [trivial, page, pageWritten, pageUncached, idsOnly];
    const lines = [
      `Machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; ${CONNECTIONS} connections, ${DURATION} s per run, server NODE_ENV=production in its own process.`,
      '',
      '| query | req/s | of trivial | p50 ms | p99 ms | requests |',
      '|---|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.title} | ${r.rps.toFixed(0)} | ${pct(r)} | ${r.p50} | ${r.p99} | ${r.total} |`),
      '',
      `Writes during the written-to row: ${writes} (${(writes / (DURATION + 3)).toFixed(1)}/s over its warm-up and run).`,
      `Page / trivial: ${pct(page)} with the cache between writes, ${pct(pageWritten)} with writes, ${pct(pageUncached)} cache off (target >= 50%); page p99 ${page.p99} / ${pageWritten.p99} / ${pageUncached.p99} ms (target < 100 ms).`,
    ];
    await api.stop();
    if (LIMIT_ROUNDS > 0) lines.push(...(await limitsOnOff(dbUrl, token)));
    console.log(lines.join('\n'));
  } finally {
    await api.stop();
    // BENCH_KEEP_DB=1 keeps the seeded database for EXPLAIN ANALYZE and pgbench.
    if (process.env.BENCH_KEEP_DB === '1') process.stderr.write(`kept ${dbUrl}\n`);
    else await dropDatabase(dbUrl);
  }
}

// Run when executed (npm run bench), not when bench/build-ab.ts imports its seeding and load.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
