// Issue 12: CPU per request of the request limits, in process (yoga.fetch, no sockets), less
// sensitive than npm run bench to other processes on a shared machine: { __typename } through
// the production handler with CVTRAIN_REQUEST_LIMITS=1 and =0, alternated 6 x 5,000 requests.
// node --import tsx bench/limits-overhead.ts
import { randomBytes } from 'node:crypto';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { ensureDatabase, initOrm, migrateUp, dropDatabase } from '../src/db/orm.js';
import { createSqlPool } from '../src/db/sql.js';
import { configureLogger } from '../src/lib/log.js';
import { createGraphQLHandler } from '../src/server.js';
import { benchSecrets } from './lib.js';
const dbUrl = `postgres://postgres@127.0.0.1:5432/cvtrain_ovh_${randomBytes(3).toString('hex')}`;
await ensureDatabase(dbUrl);
const orm = await initOrm({ databaseUrl: dbUrl, poolMax: 2 }); await migrateUp(orm);
const sql = createSqlPool(dbUrl, 2);
configureLogger({ level: 'silent', json: false });
const handlers = ['1', '0'].map((on) => {
  const config = loadConfig({ NODE_ENV: 'production', DATABASE_URL: dbUrl, CVTRAIN_LOG_LEVEL: 'silent', CVTRAIN_REQUEST_LIMITS: on, CVTRAIN_DATA_DIR: '/tmp/ovh', ...benchSecrets() });
  return createGraphQLHandler(createApp(config, orm, sql)).yoga;
});
const body = JSON.stringify({ query: '{ __typename }' });
async function run(yoga: any, n: number) {
  const t = process.cpuUsage();
  for (let i = 0; i < n; i++) { const r = await yoga.fetch('http://x/graphql', { method: 'POST', headers: { 'content-type': 'application/json' }, body }); await r.text(); }
  const u = process.cpuUsage(t); return (u.user + u.system) / n;
}
for (const y of handlers) await run(y, 3000);
const res: number[][] = [[], []];
for (let r = 0; r < 6; r++) for (let h = 0; h < 2; h++) res[h].push(await run(handlers[h], 5000));
const med = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log('us CPU per { __typename } request, limits on:', res[0].map((x) => x.toFixed(1)).join(' '), 'median', med([...res[0]]).toFixed(1));
console.log('us CPU per { __typename } request, limits off:', res[1].map((x) => x.toFixed(1)).join(' '), 'median', med([...res[1]]).toFixed(1));
await orm.close(true); await sql.close(); await dropDatabase(dbUrl); process.exit(0);
