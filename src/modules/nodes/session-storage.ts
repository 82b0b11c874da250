// Where a session's files live, for system code acting on a node's behalf (no request principal).
import type { App } from '../../app.js';
import type { OrgStorage } from '../../storage/keys.js';
import { orgKey } from '../../storage/keys.js';
import { resolveOrgStorage } from '../storage/service.js';

/** The storage of a session's checkpoints and artifacts (and, with a profile id, of a dataset). */
export async function sessionStorage(
  app: App,
  session: { organizationId: string; storageProfileId?: string | null },
): Promise<OrgStorage> {
  const em = app.orm.em.fork({ clear: true, useContext: false });
  const resolved = await resolveOrgStorage(app, em as never, session.organizationId, session.storageProfileId ?? null);
  return resolved.storage;
}

export function sessionArtifactKey(
  orgId: string,
  sessionId: string,
  kind: 'checkpoint' | 'artifact',
  name: string,
  attempt: number,
  sha256: string,
) {
  const parts = name.split('/');
  if (kind === 'artifact') return orgKey(orgId, 'sessions', sessionId, 'artifacts', ...parts);
  // A checkpoint object is never overwritten: its key carries its content hash, so the key and
  // sha256 the API recorded from the last ingested event always describe the bytes stored there.
  // With one key per file name, a node that uploaded a newer last.pt and died (or froze) before
  // its event reached the stream left the recorded key holding other bytes, and the next attempt's
  // resume failed its checksum. The ingester deletes the object a newer one of the same file name
  // (same slot) replaces, so storage stays bounded; keys differ across attempts, so the
  // checkpoint a resume starts from is never touched by the run it feeds.
  const rel = parts[0] === 'checkpoints' ? parts.slice(1) : parts;
  const file = rel.pop()!;
  const dot = file.lastIndexOf('.');
  const stamp = sha256.slice(0, CHECKPOINT_STAMP_CHARS);
  const stamped = dot > 0 ? `${file.slice(0, dot)}.${stamp}${file.slice(dot)}` : `${file}.${stamp}`;
  return orgKey(orgId, 'sessions', sessionId, 'checkpoints', `attempt-${attempt}`, ...rel, stamped);
}

// Hex characters of the sha256 in a checkpoint key: enough that two checkpoints of one file name
// within one attempt never share a key.
const CHECKPOINT_STAMP_CHARS = 16;
const STAMPED_CHECKPOINT = new RegExp(`^(.*/checkpoints/attempt-\\d+/(?:.*/)?[^/]*?)\\.[0-9a-f]{${CHECKPOINT_STAMP_CHARS}}(\\.[^./]*)?$`);

/**
 * The slot of a checkpoint key from sessionArtifactKey: the key without its content stamp
 * (attempt and file name). Null for any other key.
 */
export function checkpointSlot(key: string): string | null {
  const m = STAMPED_CHECKPOINT.exec(key);
  return m ? m[1] + (m[2] ?? '') : null;
}
