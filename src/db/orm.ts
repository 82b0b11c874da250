import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MikroORM, type Options } from '@mikro-orm/postgresql';
import { Migrator } from '@mikro-orm/migrations';
import pg from 'pg';
import { migrationsList } from '../../migrations/index.js';
import { entities } from './entities.js';
import { createLogger } from '../lib/log.js';

const log = createLogger('db');
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const migrationsDir = path.join(repoRoot, 'migrations');

export interface OrmOptions {
  databaseUrl: string;
  poolMax: number;
  /** Called with every SQL statement; tests use it to count queries. */
  onQuery?: (sql: string) => void;
}

export function ormConfig(opts: OrmOptions): Options {
  return {
    clientUrl: opts.databaseUrl,
    entities,
    extensions: [Migrator],
    // The code runs from TypeScript sources through tsx, so migrations are .ts files too.
    preferTs: true,
    discovery: { warnWhenNoEntities: true },
    pool: { min: 0, max: opts.poolMax },
    // jsonb columns round-trip as objects and timestamps stay UTC regardless of the server's zone.
    timezone: 'Z',
    forceUtcTimezone: true,
    // Entities are loaded explicitly by services; nothing lazy-loads behind a resolver's back.
    populateWhere: 'infer',
    // Run onCreate hooks inside em.create(), so a new entity has its id before the flush: API key
    // secrets embed it and credentials are encrypted with it as associated data.
    processOnCreateHooksEarly: true,
    allowGlobalContext: false,
    // Flush only when a service says so: an automatic flush before a query would write half-made
    // changes of a mutation that is about to fail validation.
    flushMode: 'commit',
    debug: opts.onQuery ? ['query'] : false,
    logger: opts.onQuery ? (message: string) => opts.onQuery!(message) : () => undefined,
    migrations: {
      path: migrationsDir,
      pathTs: migrationsDir,
      glob: '!(*.d|index).{js,ts}',
      migrationsList,
      tableName: 'mikro_orm_migrations',
      transactional: true,
      allOrNothing: true,
      emit: 'ts',
      snapshot: true,
      snapshotName: '.snapshot-cvtrain',
      fileName: (timestamp: string, name?: string) => `Migration${timestamp}${name ? '_' + name : ''}`,
    },
  };
}

export async function initOrm(opts: OrmOptions): Promise<MikroORM> {
  return MikroORM.init(ormConfig(opts));
}

export async function migrateUp(orm: MikroORM): Promise<string[]> {
  const applied = await orm.getMigrator().up();
  return applied.map((m) => m.name);
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export function databaseName(url: string): string {
  return decodeURIComponent(new URL(url).pathname.replace(/^\//, '')) || 'postgres';
}

/** True when a PostgreSQL server answers at the URL's host (the database itself may not exist yet). */
export async function postgresAnswers(url: string, timeoutMs = 1500): Promise<boolean> {
  const client = new pg.Client({ connectionString: withDatabase(url, 'postgres'), connectionTimeoutMillis: timeoutMs });
  try {
    await client.connect();
    return true;
  } catch (err) {
    // A server that answers but refuses us (auth, missing db "postgres") still answers.
    const code = (err as { code?: string }).code;
    return code !== undefined && /^[0-9A-Z]{5}$/.test(code);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Creates the URL's database when it is missing (the quickstart's default database, and test databases). */
export async function ensureDatabase(url: string): Promise<boolean> {
  const name = databaseName(url);
  const admin = new pg.Client({ connectionString: withDatabase(url, 'postgres') });
  await admin.connect();
  try {
    const exists = await admin.query('select 1 from pg_database where datname = $1', [name]);
    if (exists.rowCount) return false;
    await admin.query(`create database ${pg.escapeIdentifier(name)}`);
    log.info('created database', { database: name });
    return true;
  } catch (err) {
    // Another process may have created it between our check and create.
    if ((err as { code?: string }).code === '42P04') return false;
    throw err;
  } finally {
    await admin.end();
  }
}

export async function dropDatabase(url: string): Promise<void> {
  const admin = new pg.Client({ connectionString: withDatabase(url, 'postgres') });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${pg.escapeIdentifier(databaseName(url))} with (force)`);
  } finally {
    await admin.end();
  }
}
