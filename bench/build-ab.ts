// Two builds of the API, same run, same seeded database: the page of 50 sessions executed on every
// request (response cache off) and the trivial query, loads alternating between the two servers.
//   BENCH_AB_OTHER=/path/to/a/checkout/of/another/commit node --import tsx bench/build-ab.ts
// The other checkout needs node_modules (a symlink to this one's will do). Its migrations must be a
// prefix of this build's (an older commit): the database is migrated by this build.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { dropDatabase, ensureDatabase } from '../src/db/orm.js';
import { load, PAGE_QUERY, seed } from './api-bench.js';
import { benchSecrets, startBenchApi, type BenchApi } from './lib.js';

const PG_BASE = process.env.CVTRAIN_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432';
const ROUNDS = Number(process.env.BENCH_AB_ROUNDS ?? 3);
const other = process.env.BENCH_AB_OTHER;

async function main() {
  if (!other) throw new Error('set BENCH_AB_OTHER to the other checkout');
  const { startBenchApi: startOther } = (await import(pathToFileURL(path.join(other, 'bench/lib.ts')).href)) as {
    startBenchApi: typeof startBenchApi;
  };
  const dbUrl = `${PG_BASE}/cvtrain_bench_ab_${randomBytes(3).toString('hex')}`;
  await ensureDatabase(dbUrl);
  // Same secrets for both, so one token works on either; every limit out of the bench's way.
  const env = {
    ...process.env,
    ...benchSecrets(),
    NODE_ENV: 'production',
    DATABASE_URL: dbUrl,
    CVTRAIN_LOG_LEVEL: 'warn',
    CVTRAIN_LOCAL_GPU_NODE: '0',
    CVTRAIN_RESPONSE_CACHE_ENTRIES: '0',
    CVTRAIN_RATE_LIMIT_RPS: '1000000',
  } as NodeJS.ProcessEnv;
  const servers: Record<string, BenchApi> = {};
  try {
    servers.this = await startBenchApi(env);
    process.stderr.write('seeding...\n');
    const { token } = await seed(servers.this.url, dbUrl);
    servers.other = await startOther(env);
    for (const [title, query] of [
      ['trivial { __typename }', '{ __typename }'],
      ['page of 50 sessions (executed)', PAGE_QUERY],
    ] as const) {
      const rps: Record<string, number[]> = { this: [], other: [] };
      const cpu: Record<string, number[]> = { this: [], other: [] };
      for (let round = 0; round < ROUNDS; round++) {
        for (const which of round % 2 ? ['other', 'this'] : ['this', 'other']) {
          const api = servers[which];
          const r = await load(api.url, token, `${title}, ${which}, round ${round + 1}`, query, api.child.pid);
          rps[which].push(r.rps);
          cpu[which].push(r.cpuUsPerRequest);
        }
      }
      const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
      console.log(
        `| ${title} | ${rps.this.map((x) => x.toFixed(0)).join(' · ')} | ${rps.other.map((x) => x.toFixed(0)).join(' · ')} | ` +
          `${((sum(rps.this) / sum(rps.other) - 1) * 100).toFixed(1)}% | ${cpu.this.map((x) => x.toFixed(0)).join(' · ')} | ` +
          `${cpu.other.map((x) => x.toFixed(0)).join(' · ')} | ${((sum(cpu.this) / sum(cpu.other) - 1) * 100).toFixed(1)}% |`,
      );
    }
  } finally {
    for (const s of Object.values(servers)) await s.stop();
    await dropDatabase(dbUrl);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
