// What the benchmarks share: a free loopback port (the tests' helper), a GraphQL call that throws
// on any error (for seeding), and the API started in a process of its own.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/helpers/processes.js';

export { freePort };

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export async function gql(url: string, query: string, variables: object = {}, token?: string) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await res.json()) as { data: any; errors?: unknown };
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

/** The secrets NODE_ENV=production requires, made once per benchmark run. */
export function benchSecrets() {
  return {
    CVTRAIN_SECRET_KEYS: `bench:${randomBytes(32).toString('base64')}`,
    CVTRAIN_JWT_SECRET: randomBytes(32).toString('base64url'),
    CVTRAIN_NODE_TOKEN: randomBytes(24).toString('base64url'),
    CVTRAIN_STORAGE_SECRET: randomBytes(32).toString('base64url'),
  };
}

export interface BenchApi {
  child: ChildProcess;
  url: string;
  wsUrl: string;
  /** SIGTERM, then the process's exit. */
  stop(): Promise<void>;
}

/**
 * `src/main.ts` in its own process on a free loopback port (PORT and HOST are set here; `env`
 * gives the rest, NODE_ENV included), once it answers /healthz. BENCH_API_NODE_ARGS adds Node
 * flags for it (GC settings, "--cpu-prof --cpu-prof-dir=/tmp/prof"), as do `nodeArgs`.
 */
export async function startBenchApi(env: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<BenchApi> {
  const port = await freePort();
  const extraArgs = (process.env.BENCH_API_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, ...extraArgs, '--import', 'tsx', 'src/main.ts'], {
    cwd: repoRoot,
    env: { ...env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if ((await fetch(`${base}/healthz`).catch(() => null))?.ok) break;
    if (child.exitCode !== null) throw new Error(`the API exited (code ${child.exitCode}) before it answered`);
    if (i > 150) throw new Error('the API did not start');
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    child,
    url: `${base}/graphql`,
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
