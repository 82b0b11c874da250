import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { ValidationError } from '../lib/errors.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Turns a global ID into the row id, or fails naming the field when it is not an ID of that type. */
export function localId(globalId: string, typename: string, field: string): string {
  let decoded: { typename: string; id: string };
  try {
    decoded = decodeGlobalID(globalId);
  } catch {
    throw new ValidationError(field, `"${globalId}" is not a valid ID`);
  }
  if (decoded.typename !== typename || !UUID_RE.test(decoded.id)) {
    throw new ValidationError(field, `"${globalId}" is not a ${typename} ID`);
  }
  return decoded.id.toLowerCase();
}

export function globalId(typename: string, id: string): string {
  return encodeGlobalID(typename, id);
}

export function isUuid(value: string): boolean {
  return UUID_RE.test(value);
}
