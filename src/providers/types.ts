// One interface for every place training can run. Adapters are stateless apart from their
// clients, import cloud SDKs lazily, and report problems as values instead of throwing.
import type { Provider, Strategy } from '../modules/compute/entity.js';
import type { JobPayload } from '../../protocol/index.js';

export interface CheckResult {
  ok: boolean;
  reason: string;
}

/** A profile as adapters see it; the implicit platform profile (no profile at all) has id null. */
export interface ProfileForAdapter {
  id: string | null;
  name: string;
  provider: Provider;
  config: Record<string, unknown>;
  maxConcurrentJobs: number | null;
  maxCostPerSessionUsd: number | null;
  fallbackProfileIds: string[];
  strategy: Strategy;
}

export interface ProviderAdapter {
  readonly name: Provider;
  /** Features this provider cannot offer (e.g. "gpuType selection"), shown to users, never faked. */
  readonly unsupported: readonly string[];
  checkCredentials(profile: ProfileForAdapter): Promise<CheckResult>;
  /** Whether the provider can take a job now (or will queue it). */
  checkCapacity(profile: ProfileForAdapter): Promise<CheckResult>;
  submit(profile: ProfileForAdapter, payload: JobPayload): Promise<{ externalJobId: string }>;
  /** When the job id is known before submitting, it is recorded with the session in one write. */
  externalJobIdFor?(payload: JobPayload): string;
  /** Stops a submitted or running job; idempotent. */
  cancel(session: { id: string; attempt: number; externalJobId: string | null }): Promise<void>;
  close?(): Promise<void>;
}
