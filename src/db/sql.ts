// A plain pg pool for the hot raw reads (session lists and batch loaders). Going through the
// ORM's knex layer cost more per query than the query itself on this path.
import type { MikroORM } from '@mikro-orm/postgresql';
import { createHash } from 'node:crypto';
import pg from 'pg';

export interface SqlQuery {
  /** `?` placeholders, like the rest of the code base's raw SQL. */
  query<T = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<T[]>;
}

export interface Sql extends SqlQuery {
  /** Runs fn in one transaction on one connection; commits when it resolves, rolls back when it throws. */
  transaction<T>(fn: (tx: SqlQuery) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

// Each distinct statement becomes a named prepared statement: PostgreSQL parses and plans it
// once per connection instead of on every call (these reads run on every dashboard poll).
const prepared = new Map<string, { name: string; text: string }>();
function preparedFor(text: string): { name: string; text: string } {
  let out = prepared.get(text);
  if (out === undefined) {
    let n = 0;
    const numbered = text.replace(/\?/g, () => `$${++n}`);
    out = { name: `cvt_${createHash('sha1').update(numbered).digest('hex').slice(0, 16)}`, text: numbered };
    if (prepared.size > 5000) prepared.clear();
    prepared.set(text, out);
  }
  return out;
}

export function createSqlPool(url: string, max: number, onQuery?: (sql: string) => void): Sql {
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle client that errors (server restart) must not crash the process; the pool replaces it.
  pool.on('error', () => undefined);
  const run = async <T>(client: pg.Pool | pg.PoolClient, text: string, params: readonly unknown[] = []) => {
    onQuery?.(text);
    const { name, text: numbered } = preparedFor(text);
    const res = await client.query({ name, text: numbered, values: params as unknown[] });
    return res.rows as T[];
  };
  return {
    query: <T>(text: string, params: readonly unknown[] = []) => run<T>(pool, text, params),
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('begin');
        const result = await fn({ query: (text, params) => run(client, text, params) });
        await client.query('commit');
        return result;
      } catch (err) {
        await client.query('rollback').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}

/** For the embedded database (one session): share the ORM's single connection instead. */
export function sqlThroughOrm(orm: MikroORM): Sql {
  const conn = orm.em.getConnection();
  return {
    query: <T>(text: string, params: readonly unknown[] = []) =>
      conn.execute<T[]>(text, params as unknown[]) as Promise<T[]>,
    transaction: (fn) =>
      conn.transactional((trx) =>
        fn({ query: <T>(text: string, params: readonly unknown[] = []) => conn.execute<T[]>(text, params as unknown[], 'all', trx) as Promise<T[]> }),
      ),
    close: async () => undefined,
  };
}
