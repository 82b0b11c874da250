// Raw reads for hot paths. MikroORM's unit of work costs several times more per row than the
// pg driver (hydration, identity map, change-set snapshots), which dominated list queries; the
// services' batch loaders therefore read plain rows here and map them to the same records.
import pg from 'pg';
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

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Rows of an organization-owned table by id, in the caller's organization only (the ORM's org
 * filter does not reach raw SQL, so the predicate is written here, once, for every batch loader).
 * A key that is not a UUID matches no row: it must not reach the uuid[] cast, where it would fail
 * the statement and so every other key batched with it.
 */
export async function selectByIdsInOrg<T>(
  sql: Sql,
  table: string,
  orgId: string,
  ids: readonly string[],
  bigints: readonly string[] = [],
): Promise<Map<string, T>> {
  const uuids = ids.every((id) => UUID_RE.test(id)) ? ids : ids.filter((id) => UUID_RE.test(id));
  if (!uuids.length) return new Map();
  const rows = await sql.query<Record<string, unknown>>(
    `select * from ${table} where organization_id = ? and id = any(?::uuid[])`,
    [orgId, uuids],
  );
  return new Map(rows.map((r) => [r.id as string, camelRow<T>(r, bigints)]));
}

/**
 * A timestamptz that PostgreSQL wrote inside JSON ("2026-11-26T08:10:23.123456+00:00") as the Date
 * the pg driver makes of the same column read as a plain value (both keep whole milliseconds).
 * Anything JavaScript cannot parse ('infinity') goes through the driver's own parser.
 */
const pgTimestamptz = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ);
export function jsonDate(value: string | null | undefined): Date | null {
  if (value == null) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? (pgTimestamptz(value) as Date) : d;
}

/** How a table's rows read back from JSON (`json_agg(t)`) become the records selectByIdsInOrg makes. */
export interface JsonRowSpec {
  /** timestamptz columns (camelCase): JSON has strings, records have Dates. */
  dates: readonly string[];
  /** bigint columns (camelCase): numbers either way. */
  bigints?: readonly string[];
}

/**
 * A whole row of a table aggregated to JSON by PostgreSQL, as the same record camelRow makes of
 * `select *` through the driver: same keys, jsonb values parsed, dates as Dates, bigints as numbers.
 */
export function camelJsonRow<T>(row: Record<string, unknown>, spec: JsonRowSpec): T {
  const out = camelRow<Record<string, unknown>>(row, spec.bigints);
  for (const d of spec.dates) if (d in out) out[d] = jsonDate(out[d] as string | null);
  return out as T;
}
