// Raw reads for hot paths. MikroORM's unit of work costs several times more per row than the
// pg driver (hydration, identity map, change-set snapshots), which dominated list queries; the
// services' batch loaders therefore read plain rows here and map them to the same records.
import type { Sql } from './sql.js';

const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
const keyCache = new Map<string, string>();

/** snake_case row -> camelCase record; bigint columns (returned as strings by pg) become numbers. */
export function camelRow<T>(row: Record<string, unknown>, bigints: readonly string[] = []): T {
  const out: Record<string, unknown> = {};
  for (const key in row) {
    let k = keyCache.get(key);
    if (k === undefined) keyCache.set(key, (k = camel(key)));
    out[k] = row[key];
  }
  for (const b of bigints) if (out[b] != null) out[b] = Number(out[b]);
  return out as T;
}

/**
 * Rows of an organization-owned table by id, in the caller's organization only (the ORM's org
 * filter does not reach raw SQL, so the predicate is written here, once, for every batch loader).
 */
export async function selectByIdsInOrg<T>(
  sql: Sql,
  table: string,
  orgId: string,
  ids: readonly string[],
  bigints: readonly string[] = [],
): Promise<Map<string, T>> {
  const rows = await sql.query<Record<string, unknown>>(
    `select * from ${table} where organization_id = ? and id = any(?::uuid[])`,
    [orgId, ids],
  );
  return new Map(rows.map((r) => [r.id as string, camelRow<T>(r, bigints)]));
}
