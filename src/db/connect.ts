import type { MikroORM } from '@mikro-orm/postgresql';
import type { Config } from '../config.js';
import { createLogger } from '../lib/log.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded.js';
import { ensureDatabase, initOrm, migrateUp, postgresAnswers } from './orm.js';
import { createSqlPool, sqlThroughOrm, type Sql } from './sql.js';

const log = createLogger('db');

export interface Database {
  orm: MikroORM;
  sql: Sql;
  url: string;
  embedded: EmbeddedPostgres | null;
  close(): Promise<void>;
}

/**
 * Resolves the database the way the quickstart needs it: DATABASE_URL (or the default URL) when a
 * server answers there, creating the database if missing; otherwise an embedded PostgreSQL, unless
 * CVTRAIN_EMBEDDED_PG=never. Migrations are applied before anything else uses the database.
 */
export async function connectDatabase(config: Config, opts: { migrate?: boolean } = {}): Promise<Database> {
  let url = config.databaseUrl;
  let embedded: EmbeddedPostgres | null = null;
  let poolMax = config.dbPoolMax;
  const useEmbedded =
    config.embeddedPg === 'always' || (config.embeddedPg === 'auto' && !(await postgresAnswers(url)));
  if (useEmbedded) {
    if (config.embeddedPg === 'auto' && config.databaseUrlExplicit) {
      log.warn('DATABASE_URL does not answer; falling back to embedded PostgreSQL', { url: redactUrl(url) });
    }
    embedded = await startEmbeddedPostgres(
      config.dataDir,
      config.embeddedPg === 'always' ? 'CVTRAIN_EMBEDDED_PG=always' : `no PostgreSQL answered at ${redactUrl(url)}`,
    );
    url = embedded.url;
    poolMax = 1;
  } else {
    await ensureDatabase(url);
  }
  const orm = await initOrm({ databaseUrl: url, poolMax });
  if (opts.migrate !== false) {
    const applied = await migrateUp(orm);
    if (applied.length) log.info('applied migrations', { migrations: applied });
  }
  const sql = embedded ? sqlThroughOrm(orm) : createSqlPool(url, poolMax);
  return {
    orm,
    sql,
    url,
    embedded,
    async close() {
      await sql.close();
      await orm.close(true);
      await embedded?.stop();
    },
  };
}

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable url)';
  }
}
