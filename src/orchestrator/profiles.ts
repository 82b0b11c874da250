// Which compute profiles a session may use: the given one, the organization's default, or the
// implicit platform profile; and the fallbacks a strategy other than QUEUE may try after it.
import type { SqlQuery } from '../db/sql.js';
import type { Provider } from '../modules/compute/entity.js';
import type { ProfileForAdapter } from '../providers/types.js';

// The implicit profile used when an organization has none: platform GPUs, wait when busy.
export const IMPLICIT_PLATFORM: ProfileForAdapter = {
  id: null,
  name: 'platform (default)',
  provider: 'PLATFORM',
  config: { gpus: 1, allowWaiting: true, maxRetries: 0 },
  maxConcurrentJobs: null,
  maxCostPerSessionUsd: null,
  fallbackProfileIds: [],
  strategy: 'QUEUE',
};

interface ProfileRow {
  id: string;
  name: string;
  provider: Provider;
  config: Record<string, unknown>;
  max_concurrent_jobs: number | null;
  max_cost_per_session_usd: number | null;
  fallback_profile_ids: string[];
  strategy: ProfileForAdapter['strategy'];
  is_default: boolean;
}

const toProfile = (r: ProfileRow): ProfileForAdapter => ({
  id: r.id,
  name: r.name,
  provider: r.provider,
  config: r.config,
  maxConcurrentJobs: r.max_concurrent_jobs,
  maxCostPerSessionUsd: r.max_cost_per_session_usd,
  fallbackProfileIds: r.fallback_profile_ids,
  strategy: r.strategy,
});

const PROFILE_COLUMNS =
  'id, name, provider, config, max_concurrent_jobs, max_cost_per_session_usd, fallback_profile_ids, strategy, is_default';

/**
 * The profile a session would use: the given one, the default, or the implicit platform profile;
 * null when a given id is not one of the organization's profiles.
 */
export async function findProfile(sql: SqlQuery, orgId: string, profileId: string | null): Promise<ProfileForAdapter | null> {
  const rows = profileId
    ? await sql.query<ProfileRow>(
        `select ${PROFILE_COLUMNS} from compute_profiles where organization_id = ? and id = ?`,
        [orgId, profileId],
      )
    : await sql.query<ProfileRow>(
        `select ${PROFILE_COLUMNS} from compute_profiles where organization_id = ? and is_default`,
        [orgId],
      );
  if (profileId && !rows[0]) return null;
  return rows[0] ? toProfile(rows[0]) : IMPLICIT_PLATFORM;
}

/** The profile, then its fallbacks in their listed order (none for QUEUE, which waits instead). */
export async function profileChain(sql: SqlQuery, orgId: string, profile: ProfileForAdapter): Promise<ProfileForAdapter[]> {
  const chain: ProfileForAdapter[] = [profile];
  if (profile.strategy !== 'QUEUE' && profile.fallbackProfileIds.length) {
    const rows = await sql.query<ProfileRow>(
      `select ${PROFILE_COLUMNS} from compute_profiles where organization_id = ? and id = any(?::uuid[])`,
      [orgId, profile.fallbackProfileIds],
    );
    const byId = new Map(rows.map((r) => [r.id, toProfile(r)]));
    for (const id of profile.fallbackProfileIds) if (byId.has(id)) chain.push(byId.get(id)!);
  }
  return chain;
}
