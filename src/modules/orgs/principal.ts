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
  /**
   * The organization's data version as this request began (org_data_versions; "0" before its
   * first write): every transaction that writes the organization's rows bumps it. Read in the
   * same statement as the credentials, so the response cache needs no round trip of its own.
   */
  dataVersion: string;
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
      {
        organization_id: string;
        role: Role;
        secret_hash: string;
        persisted_only: boolean;
        last_used_at: Date | null;
        data_version: string | null;
      }
    >(
      `select k.organization_id, k.role, k.secret_hash, k.persisted_only, k.last_used_at, v.version as data_version
         from api_keys k left join org_data_versions v on v.organization_id = k.organization_id
        where k.id = ? and k.revoked_at is null`,
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
      dataVersion: row.data_version ?? '0',
    };
  }
  const claims = await verifySessionToken(token, app.config.jwtSecret);
  if (!claims) return null;
  // The role is read fresh each time, so a removed member or a changed role takes effect at once.
  const rows = await app.sql.query<{ role: Role; data_version: string | null }>(
    `select m.role, v.version as data_version
       from memberships m left join org_data_versions v on v.organization_id = m.organization_id
      where m.organization_id = ? and m.user_id = ?`,
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
    dataVersion: rows[0].data_version ?? '0',
  };
}
