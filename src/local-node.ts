// `npm start` runs one gpu-node next to the API (CVTRAIN_LOCAL_GPU_NODE=0 turns it off), as its
// own process, exactly as a node on another machine would run: it only knows the API URL, Redis
// and the join token.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from './config.js';
import { createLogger } from './lib/log.js';

const log = createLogger('local-gpu-node');
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface LocalNode {
  child: ChildProcess;
  stop(): Promise<void>;
}

export function startLocalGpuNode(config: Config, apiBaseUrl: string): LocalNode {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'gpu-node', 'main.ts')], {
    cwd: repoRoot,
    env: {
      ...process.env,
      CVTRAIN_API_URL: apiBaseUrl,
      CVTRAIN_NODE_TOKEN: config.nodeToken,
      REDIS_URL: config.redisUrl,
      CVTRAIN_REDIS_PREFIX: config.redisPrefix,
      CVTRAIN_NODE_DATA_DIR: process.env.CVTRAIN_NODE_DATA_DIR ?? path.join(config.dataDir, 'gpu-node'),
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  let exited = false;
  const done = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = true;
      if (code !== 0 && signal !== 'SIGTERM') log.warn('the local gpu-node exited', { code, signal });
      resolve();
    }),
  );
  log.info('started a local gpu-node', { pid: child.pid });
  return {
    child,
    async stop() {
      if (exited) return;
      // The node checkpoints running trainers and gives their jobs back before it exits.
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await done;
      clearTimeout(timer);
    },
  };
}
