// npm start: the API server (and, in later stages, the background workers and a local gpu-node).
import { createApp } from './app.js';
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

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    // A second signal, or a hung close, still ends the process.
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    try {
      await server.close();
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
