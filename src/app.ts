// Process-wide dependencies, built once at start and shared by every request.
import type { MikroORM } from '@mikro-orm/postgresql';
import type { Config } from './config.js';
import type { Sql } from './db/sql.js';
import { SecretBox } from './lib/secret-box.js';

export interface App {
  config: Config;
  orm: MikroORM;
  /** Raw reads on hot paths (see src/db/rows.ts). */
  sql: Sql;
  secretBox: SecretBox;
}

export function createApp(config: Config, orm: MikroORM, sql: Sql): App {
  return { config, orm, sql, secretBox: new SecretBox(config.secretKeys) };
}
