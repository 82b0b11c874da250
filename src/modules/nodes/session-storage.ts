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
) {
  // Within an attempt a newer last.pt replaces the older object (bounded storage); across attempts
  // keys differ, so the checkpoint a resume starts from is never overwritten by the run it feeds.
  const parts = name.split('/');
  return kind === 'checkpoint'
    ? orgKey(orgId, 'sessions', sessionId, 'checkpoints', `attempt-${attempt}`, ...(parts[0] === 'checkpoints' ? parts.slice(1) : parts))
    : orgKey(orgId, 'sessions', sessionId, 'artifacts', ...parts);
}
