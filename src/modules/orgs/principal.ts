// Who is calling: resolved from the Authorization header once per request.
import type { App } from '../../app.js';
import type { Role } from './entity.js';
import { apiKeySecretMatches, parseApiKey, verifySessionToken } from './credentials.js';

export interface Principal {
  kind: 'user' | 'apiKey';
  orgId: string;
  role: Role;
  userId: string | null;
  apiKeyId: string | null;
  /** API keys made for integrations may run only operations from the persisted manifest. */
  persistedOnly: boolean;
}

// last_used_at is bookkeeping, not audit: writing it at most once a minute per key keeps every
// authenticated request from turning into a write.
const LAST_USED_WRITE_INTERVAL_MS = 60_000;

export function bearerToken(authorization: string | null | undefined): string | null {
  if (!authorization) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return m ? m[1] : null;
}

/**
 * Runs on every authenticated request, so it reads with one indexed SQL statement rather than
 * through the ORM's unit of work (the membership or key row is all it needs).
 */
export async function resolvePrincipal(app: App, authorization: string | null): Promise<Principal | null> {
  const token = bearerToken(authorization);
  if (!token) return null;
  const key = parseApiKey(token);
  if (key) {
    const rows = await app.sql.query<
      { organization_id: string; role: Role; secret_hash: string; persisted_only: boolean; last_used_at: Date | null }
    >(
      'select organization_id, role, secret_hash, persisted_only, last_used_at from api_keys where id = ? and revoked_at is null',
      [key.keyId],
    );
    const row = rows[0];
    if (!row || !apiKeySecretMatches(key.secret, row.secret_hash)) return null;
    if (!row.last_used_at || Date.now() - new Date(row.last_used_at).getTime() > LAST_USED_WRITE_INTERVAL_MS) {
      void app.sql.query('update api_keys set last_used_at = now() where id = ?', [key.keyId]).catch(() => undefined);
    }
    return {
      kind: 'apiKey',
      orgId: row.organization_id,
      role: row.role,
      userId: null,
      apiKeyId: key.keyId,
      persistedOnly: row.persisted_only,
    };
  }
  const claims = await verifySessionToken(token, app.config.jwtSecret);
  if (!claims) return null;
  // The role is read fresh each time, so a removed member or a changed role takes effect at once.
  const rows = await app.sql.query<{ role: Role }>(
    'select role from memberships where organization_id = ? and user_id = ?',
    [claims.orgId, claims.userId],
  );
  if (!rows[0]) return null;
  return {
    kind: 'user',
    orgId: claims.orgId,
    role: rows[0].role,
    userId: claims.userId,
    apiKeyId: null,
    persistedOnly: false,
  };
}
