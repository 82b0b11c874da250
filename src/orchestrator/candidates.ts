// The candidates a strategy tries, each checked (provider available, credentials, concurrency
// limit, capacity), and the typed refusal when none can take the session.
import type { SqlQuery } from '../db/sql.js';
import { ConflictError, LimitExceededError } from '../lib/errors.js';
import { countActiveOnProfile } from '../modules/training/repository.js';
import type { ProviderRegistry } from '../providers/registry.js';
import type { ProfileForAdapter } from '../providers/types.js';
import { profileChain } from './profiles.js';

export interface Candidate {
  profile: ProfileForAdapter;
  viable: boolean;
  reason: string;
  /** True when the only problem is a limit (concurrency, cost), for the error type. */
  limited: boolean;
}

/** Candidates in the order the strategy tries them, each checked. */
export async function planCandidates(
  sql: SqlQuery,
  providers: ProviderRegistry,
  orgId: string,
  profile: ProfileForAdapter,
): Promise<Candidate[]> {
  const chain = await profileChain(sql, orgId, profile);
  // CHEAPEST and FASTEST rank by estimates; until cost and speed estimates exist for the cloud
  // providers the chain keeps the profile's own order (PREFERRED), which is stated in attempts.
  const out: Candidate[] = [];
  for (const p of chain) out.push(await check(sql, providers, p));
  return out;
}

async function check(sql: SqlQuery, providers: ProviderRegistry, profile: ProfileForAdapter): Promise<Candidate> {
  if (!providers.has(profile.provider)) {
    return { profile, viable: false, limited: false, reason: `${profile.provider} is not available in this deployment yet` };
  }
  const adapter = providers.get(profile.provider);
  const creds = await adapter.checkCredentials(profile);
  if (!creds.ok) return { profile, viable: false, limited: false, reason: creds.reason };
  if (profile.id && profile.maxConcurrentJobs != null) {
    const active = await countActiveOnProfile(sql, profile.id);
    if (active >= profile.maxConcurrentJobs) {
      return {
        profile,
        viable: false,
        limited: true,
        reason: `${profile.name}: ${active} of ${profile.maxConcurrentJobs} concurrent jobs already running or queued`,
      };
    }
  }
  const capacity = await adapter.checkCapacity(profile);
  return { profile, viable: capacity.ok, limited: false, reason: capacity.reason };
}

/** The typed error a caller should see when no candidate can take the session; null when one can. */
export function refusalFor(candidates: Candidate[]): ConflictError | LimitExceededError | null {
  if (candidates.some((c) => c.viable)) return null;
  const reasons = candidates.map((c) => c.reason).join('; ');
  if (candidates.every((c) => c.limited)) {
    const max = candidates[0]?.profile.maxConcurrentJobs ?? null;
    return new LimitExceededError('maxConcurrentJobs', max, `No compute can take this session now: ${reasons}`);
  }
  return new ConflictError(`No compute can take this session: ${reasons}`);
}
