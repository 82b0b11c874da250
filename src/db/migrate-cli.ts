// npm run migrate            -> apply pending migrations
// npm run migration:create   -> generate a migration from the difference between entities and the snapshot
import { loadConfig, ConfigError } from '../config.js';
import { configureLogger } from '../lib/log.js';
import { connectDatabase } from './connect.js';
import { writeMigrationsIndex } from './migrations-index.js';
import { migrationsDir } from './orm.js';

async function main() {
  const command = process.argv[2] ?? 'up';
  const config = loadConfig();
  configureLogger({ level: config.logLevel, json: config.env === 'production' });
  const db = await connectDatabase(config, { migrate: command === 'up' });
  try {
    if (command === 'create') {
      const initial = process.argv.includes('--initial');
      const result = await db.orm.getMigrator().createMigration(undefined, false, initial);
      if (result.fileName) {
        writeMigrationsIndex(migrationsDir);
        console.log(`created ${result.fileName} and updated migrations/index.ts`);
      } else {
        console.log('no changes: entities match the last snapshot');
      }
    } else if (command === 'up') {
      const pending = await db.orm.getMigrator().getPendingMigrations();
      console.log(`database up to date (${pending.length} pending)`);
    } else {
      throw new Error(`unknown command "${command}" (expected "up" or "create")`);
    }
  } finally {
    await db.close();
  }
}

main().catch((err) => {
  console.error(err instanceof ConfigError ? err.message : err);
  process.exit(1);
});
