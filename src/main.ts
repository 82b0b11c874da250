// npm start: the API server, its background workers (event ingester, reaper) and a local gpu-node.
import { createApp, listeningUrl } from './app.js';
import { startLocalGpuNode } from './local-node.js';
import { startWorkers } from './workers.js';
import { ConfigError, loadConfig } from './config.js';
import { connectDatabase } from './db/connect.js';
import { configureLogger, createLogger, errorFields } from './lib/log.js';
import { startServer } from './server.js';

const log = createLogger('main');

async function main() {
  const config = loadConfig();
  configureLogger({ level: config.logLevel, json: config.env === 'production' });
  const db = await connectDatabase(config);
  const app = createApp(config, db.orm, db.sql);
  const server = await startServer(app);
  const workers = config.workers ? startWorkers(app) : null;
  const node = config.localGpuNode ? startLocalGpuNode(config, listeningUrl(config.host, server.port)) : null;

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    // A second signal, or a hung close, still ends the process.
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    try {
      // The node first: its trainers checkpoint and their jobs go back to the queue while the
      // API can still record it.
      await node?.stop();
      await workers?.stop();
      await server.close();
      await app.close();
      await db.close();
      log.info('stopped cleanly');
      process.exit(0);
    } catch (err) {
      log.error('shutdown failed', errorFields(err));
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
  } else {
    log.error('failed to start', errorFields(err));
  }
  process.exit(1);
});
