// What the platform announces, and on which topic. Payloads are the same records resolvers use,
// so a subscription's resolver needs no database read per subscriber per event.
import type { GpuNodeRecord } from '../modules/nodes/service.js';
import type { TrainingSessionRecord } from '../modules/training/records.js';
import type { EpochMetricRecord } from '../modules/training/service.js';
import type { RedisNames } from '../../protocol/index.js';
import type { Topics } from './topics.js';

export interface Publisher {
  sessionChanged(session: TrainingSessionRecord): void;
  epoch(epoch: EpochMetricRecord): void;
  nodeChanged(node: GpuNodeRecord): void;
  /** After the revocation committed: every replica closes the credential's websocket connections. */
  credentialRevoked(revoked: RevokedCredential): void;
}

/** An API key revoked, or a user removed from an organization. */
export type RevokedCredential = { apiKeyId: string } | { orgId: string; userId: string };

export function createPublisher(topics: Topics, names: RedisNames): Publisher {
  return {
    sessionChanged: (session) => topics.publish(names.sessionTopic(session.id), session),
    epoch: (epoch) => topics.publish(names.epochsTopic(epoch.sessionId), epoch),
    nodeChanged: (node) => topics.publish(names.nodesTopic, node),
    credentialRevoked: (revoked) => topics.publish(names.credentialsTopic, revoked),
  };
}

/** Records cross Redis as JSON: dates arrive as ISO strings and are turned back into Dates. */
export function reviveDates<T extends object>(value: T, keys: readonly string[]): T {
  const out = { ...value } as Record<string, unknown>;
  for (const k of keys) if (typeof out[k] === 'string') out[k] = new Date(out[k] as string);
  return out as T;
}
