// `npm run gpu-node`: the daemon as a process. SIGTERM/SIGINT run the clean shutdown (trainers
// checkpoint, sessions are given back, events flushed) and exit 0; a second signal exits at once.
import { configureLogger, createLogger } from '../src/lib/log.js';
import { loadNodeConfig, NodeConfigError } from './config.js';
import { NodeUnauthorizedError } from './api-client.js';
import { startGpuNode, type GpuNode } from './node.js';
import { PythonNotFoundError } from './python.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadNodeConfig();
  } catch (err) {
    if (err instanceof NodeConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  configureLogger({ level: config.logLevel, json: process.env.NODE_ENV === 'production' });
  const log = createLogger('gpu-node');

  let node: GpuNode | null = null;
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn(`${sig} again: exiting now without waiting for trainers`);
      process.exit(1);
    }
    log.info(`${sig} received`);
    if (!node) process.exit(0);
    void node.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  try {
    node = await startGpuNode(config, { logger: log });
  } catch (err) {
    if (err instanceof PythonNotFoundError || err instanceof NodeUnauthorizedError) {
      log.error(err.message);
      process.exit(2);
    }
    throw err;
  }
}

main().catch((err) => {
  process.stderr.write(`gpu-node failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
