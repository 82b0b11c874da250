import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { ValidationError } from '../lib/errors.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// Messages name the field, never the value sent: an id field is where a pasted token may land.

/** Turns a global ID into the row id, or fails naming the field when it is not an ID of that type. */
export function localId(globalId: string, typename: string, field: string): string {
  let decoded: { typename: string; id: string };
  try {
    decoded = decodeGlobalID(globalId);
  } catch {
    throw new ValidationError(field, 'is not a valid ID');
  }
  if (decoded.typename !== typename || !UUID_RE.test(decoded.id)) {
    throw new ValidationError(field, `is not a ${typename} ID`);
  }
  return decoded.id.toLowerCase();
}

const nodeTypes = new Set<string>();

/** The object types that implement Node (schema.ts registers them once the schema is built). */
export function registerNodeTypes(typenames: Iterable<string>): void {
  for (const t of typenames) nodeTypes.add(t);
}

/**
 * `node(id:)`'s decoder. Every row id is a UUID and every node type is known, so anything else is
 * refused here, for that one field: a malformed id used to reach SQL ("invalid input syntax for
 * type uuid") and fail every lookup batched with it.
 */
export function decodeNodeId(globalId: string): { typename: string; id: string } {
  let decoded: { typename: string; id: string };
  try {
    decoded = decodeGlobalID(globalId);
  } catch {
    throw new ValidationError('id', 'is not a valid ID');
  }
  if (!UUID_RE.test(decoded.id) || !nodeTypes.has(decoded.typename)) throw new ValidationError('id', 'is not a valid ID');
  return { typename: decoded.typename, id: decoded.id.toLowerCase() };
}

export function globalId(typename: string, id: string): string {
  return encodeGlobalID(typename, id);
}

export function isUuid(value: string): boolean {
  return UUID_RE.test(value);
}
