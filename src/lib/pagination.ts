// Keyset pagination for Relay connections: newest first by (createdAt, id), so pages stay stable
// while rows are inserted, and every page is one index range scan however deep the client goes.
import { limits } from '../config.js';
import { ValidationError } from './errors.js';

export interface PageArgs {
  first?: number | null;
  after?: string | null;
  last?: number | null;
  before?: string | null;
}

export interface Cursor {
  createdAt: Date;
  id: string;
}

export interface PageRequest {
  limit: number;
  /** Rows strictly older than this (forward) or newer (backward). */
  cursor: Cursor | null;
  backward: boolean;
}

export interface ConnectionResult<T> {
  edges: { cursor: string; node: T }[];
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; startCursor: string | null; endCursor: string | null };
  totalCount: () => Promise<number>;
}

export function encodeCursor(c: Cursor): string {
  return Buffer.from(`${c.createdAt.toISOString()}|${c.id}`).toString('base64url');
}

export function decodeCursor(value: string, field: string): Cursor {
  const [iso, id] = Buffer.from(value, 'base64url').toString('utf8').split('|');
  const createdAt = new Date(iso ?? '');
  if (!id || Number.isNaN(createdAt.getTime()) || !/^[0-9a-f-]{36}$/.test(id)) {
    throw new ValidationError(field, 'is not a cursor from this connection');
  }
  return { createdAt, id };
}

export function pageRequest(args: PageArgs): PageRequest {
  if (args.first != null && args.last != null) throw new ValidationError('first', 'use either first or last, not both');
  const size = args.last ?? args.first ?? limits.pageDefault;
  const field = args.last != null ? 'last' : 'first';
  if (!Number.isInteger(size) || size < 0) throw new ValidationError(field, 'must be a non-negative integer');
  if (size > limits.pageMax) throw new ValidationError(field, `must be at most ${limits.pageMax}`);
  const backward = args.last != null || (args.before != null && args.first == null);
  const raw = backward ? args.before : args.after;
  return {
    limit: size,
    cursor: raw ? decodeCursor(raw, backward ? 'before' : 'after') : null,
    backward,
  };
}

// Cursors are encoded only when a client selects them. A class rather than an object literal with
// a getter: every edge then shares one shape and one prototype getter (a page makes 50 of them).
class Edge<Row extends Cursor, Node> {
  constructor(
    private readonly row: Row,
    readonly node: Node,
  ) {}

  get cursor(): string {
    return encodeCursor(this.row);
  }
}

/**
 * Builds the connection from rows fetched with limit + 1 in the page's direction (newest first
 * when forward, oldest first when backward).
 */
export function toConnection<Row extends Cursor, Node>(
  req: PageRequest,
  rows: Row[],
  toNode: (row: Row) => Node,
  totalCount: () => Promise<number>,
): ConnectionResult<Node> {
  const more = rows.length > req.limit;
  const page = rows.slice(0, req.limit);
  if (req.backward) page.reverse();
  const edges = page.map((row) => new Edge(row, toNode(row)));
  return {
    edges,
    pageInfo: {
      hasNextPage: req.backward ? req.cursor !== null : more,
      hasPreviousPage: req.backward ? more : req.cursor !== null,
      startCursor: page.length ? encodeCursor(page[0]) : null,
      endCursor: page.length ? encodeCursor(page[page.length - 1]) : null,
    },
    totalCount,
  };
}

/** The MikroORM where-clause and ordering for a page request. */
export function keysetWhere(req: PageRequest): { where: object; orderBy: object } {
  const dir = req.backward ? 'asc' : 'desc';
  const op = req.backward ? '$gt' : '$lt';
  const where = req.cursor
    ? {
        $or: [
          { createdAt: { [op]: req.cursor.createdAt } },
          { createdAt: req.cursor.createdAt, id: { [op]: req.cursor.id } },
        ],
      }
    : {};
  return { where, orderBy: { createdAt: dir, id: dir } };
}
