// npm run bench:memory (issue 12, finding 1): 1,000 distinct ~1 MB anonymous documents sent to
// one API process (NODE_ENV=production, its own process), sampling the process's RSS and the
// latency of `{ __typename }` from a second connection throughout.
// Targets: RSS growth < 200 MB; every `{ __typename }` answered within 100 ms.
// BENCH_MEMORY_DOCS (1000) and BENCH_MEMORY_CONCURRENCY (2) change the run; CVTRAIN_REQUEST_LIMITS=0
// in the environment runs it against the old behaviour (expect the process to grow by GBs).
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dropDatabase, ensureDatabase } from '../src/db/orm.js';
import { benchSecrets, startBenchApi } from './lib.js';

const PG_BASE = process.env.CVTRAIN_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432';
const DOCS = Number(process.env.BENCH_MEMORY_DOCS ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_MEMORY_CONCURRENCY ?? 2);
const SIZE = 1_000_000;

/** Three kinds, each distinct: repeated fields, the same with a syntax error, a big comment. */
function documentFor(i: number): string {
  const fields = '__typename '.repeat(Math.floor(SIZE / 11));
  switch (i % 3) {
    case 0:
      return `{ d${i}: __typename ${fields}}`;
    case 1:
      return `{ d${i}: __typename ${fields}`;
    default:
      return `# ${i} ${'x'.repeat(SIZE)}\n{ __typename }`;
  }
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

async function post(url: string, query: string) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
  await res.arrayBuffer();
  return res.status;
}

async function main() {
  const dbUrl = `${PG_BASE}/cvtrain_bench_mem_${randomBytes(3).toString('hex')}`;
  await ensureDatabase(dbUrl);
  const api = await startBenchApi({
    ...process.env,
    NODE_ENV: 'production',
    DATABASE_URL: dbUrl,
    CVTRAIN_LOG_LEVEL: 'warn',
    CVTRAIN_LOCAL_GPU_NODE: '0',
    CVTRAIN_WORKERS: '0',
    ...benchSecrets(),
  });
  const pid = api.child.pid!;
  try {
    for (let i = 0; i < 20; i++) await post(api.url, '{ __typename }');
    const rssStart = rssMb(pid);
    let rssMax = rssStart;
    const latencies: number[] = [];
    const statuses = new Map<number, number>();
    let sent = 0;
    let done = false;
    // The probe: one `{ __typename }` every 50 ms on its own connection while the load runs.
    const probe = (async () => {
      while (!done) {
        const t = performance.now();
        await post(api.url, '{ __typename }');
        latencies.push(performance.now() - t);
        rssMax = Math.max(rssMax, rssMb(pid));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (sent < DOCS) {
          const status = await post(api.url, documentFor(sent++));
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    done = true;
    await probe;
    const rssEnd = rssMb(pid);
    latencies.sort((a, b) => a - b);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(1);
    const limitsOn = process.env.CVTRAIN_REQUEST_LIMITS !== '0';
    console.log(
      [
        `documents: ${DOCS} distinct ~1 MB (fields / syntax error / comment), ${CONCURRENCY} at a time, ${seconds.toFixed(1)} s; limits ${limitsOn ? 'on' : 'off'}`,
        `statuses: ${[...statuses].map(([s, n]) => `${s} x${n}`).join(', ')}`,
        `RSS: start ${rssStart.toFixed(0)} MB, max ${rssMax.toFixed(0)} MB, end ${rssEnd.toFixed(0)} MB, growth ${(rssMax - rssStart).toFixed(0)} MB (target < 200)`,
        `{ __typename } during the load: ${latencies.length} probes, p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${latencies[latencies.length - 1].toFixed(1)} ms (target: all < 100 ms)`,
      ].join('\n'),
    );
  } finally {
    await api.stop();
    await dropDatabase(dbUrl);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
