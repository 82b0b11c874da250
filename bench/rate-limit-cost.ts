// What the request rate limit costs per request, in CPU rather than requests/s (which a shared
// machine's other load swamps; see bench/RESULTS.md "Rate limits"): the limiter alone, driven as
// the API drives it (50 requests of one caller in flight), against a Redis server of its own whose
// CPU is read from /proc. Two ways: the shipped one (tokens leased from Redis a few at a time,
// src/lib/rate-limit.ts) and one Redis round trip per request.
//   node --import tsx bench/rate-limit-cost.ts     (BENCH_REQUESTS, default 100000)
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { LeasedBuckets, TokenBuckets, type BucketSpec } from '../src/lib/rate-limit.js';
import { freePort } from './lib.js';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 100_000);
const IN_FLIGHT = 50;
// As bench/api-bench.ts runs the limit: out of this load's reach, the default burst.
const SPEC: BucketSpec = { name: 'bench', ratePerSecond: 1_000_000, burst: 200 };

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function drive(take: () => number | Promise<number>) {
  let sent = 0;
  let refused = 0;
  const worker = async () => {
    while (sent < REQUESTS) {
      sent++;
      if ((await take()) > 0) refused++;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return refused;
}

async function measure(title: string, take: () => number | Promise<number>, redisPid: number) {
  await drive(take); // warm-up
  const node0 = process.cpuUsage();
  const redis0 = cpuSeconds(redisPid);
  const t0 = performance.now();
  const refused = await drive(take);
  const wall = performance.now() - t0;
  const node = process.cpuUsage(node0);
  const nodeUs = (node.user + node.system) / REQUESTS;
  const redisUs = ((cpuSeconds(redisPid) - redis0) * 1e6) / REQUESTS;
  return `| ${title} | ${nodeUs.toFixed(2)} | ${redisUs.toFixed(2)} | ${(nodeUs + redisUs).toFixed(2)} | ${((REQUESTS / wall) * 1000).toFixed(0)} | ${refused} |`;
}

async function main() {
  const port = await freePort();
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const redis = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, commandTimeout: 1000 });
  // Refused connections while redis-server starts are retried; they are not failures.
  redis.on('error', () => undefined);
  try {
    for (let i = 0; ; i++) {
      if ((await redis.ping().catch(() => null)) === 'PONG') break;
      if (i > 50) throw new Error('redis-server did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    const buckets = new TokenBuckets(redis, 'bench:');
    const leased = new LeasedBuckets(buckets, SPEC);
    const rows = [
      await measure('leased (shipped)', () => leased.take('u:bench'), server.pid!),
      await measure('one round trip per request', () => buckets.take(SPEC, 'u:bench2').then((r) => (r.granted ? 0 : r.retryAfterMs)), server.pid!),
    ];
    leased.close();
    console.log(
      [
        `${REQUESTS} requests of one caller, ${IN_FLIGHT} in flight, rate ${SPEC.ratePerSecond}/s, burst ${SPEC.burst}:`,
        '',
        '| limiter | API process CPU µs/request | Redis CPU µs/request | total µs/request | requests/s (limiter alone) | refused |',
        '|---|---:|---:|---:|---:|---:|',
        ...rows,
      ].join('\n'),
    );
  } finally {
    redis.disconnect();
    server.kill('SIGTERM');
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
