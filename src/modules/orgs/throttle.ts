// Sign-in and sign-up throttling. Checked before a password is hashed or verified: each of those
// costs ~50-120 ms of scrypt CPU, and answering every guess let 25 clients pin both cores.
import { createHash } from 'node:crypto';
import { LimitExceededError } from '../../lib/errors.js';
import { createLogger } from '../../lib/log.js';
import { addressBucket, retryAfterSeconds, type BucketSpec, type RateLimits } from '../../lib/rate-limit.js';

const log = createLogger('auth-throttle');

export interface AuthAttempt {
  /** The password was right: the account's token is given back. */
  succeeded(): Promise<void>;
}

/** What throttling needs of the request: narrow, so the service layer stays free of graphql/. */
export interface ThrottleContext {
  app: { rateLimits: RateLimits };
  clientAddress: string | null;
  noteRetryAfter(seconds: number): void;
}

const NO_OP: AuthAttempt = { succeeded: async () => undefined };

/**
 * Two buckets. Per client address: every attempt is charged, never refunded. Per account (the
 * normalised email): charged before the password is checked and refunded when it was right, so
 * only failures cost; charged up front rather than after a failure so that guesses sent at once
 * cannot all pass before the first failure is recorded. An unknown email is charged like a known
 * one, so the limit tells nothing about which accounts exist. The price: someone who knows an
 * email can keep its bucket empty, and its owner then waits too (README "Rate limits").
 */
export async function throttleAuthAttempt(ctx: ThrottleContext, email: string): Promise<AuthAttempt> {
  const limits = ctx.app.rateLimits;
  const { authPerAddress, authPerAccount } = limits;
  if (!authPerAddress && !authPerAccount) return NO_OP;
  // Emails stay out of Redis; the hash is as good a key.
  const account = createHash('sha256').update(email).digest('hex').slice(0, 32);
  try {
    if (authPerAddress) {
      const { granted, retryAfterMs } = await limits.buckets.take(authPerAddress, addressBucket(ctx.clientAddress));
      if (!granted) refuse(ctx, authPerAddress, retryAfterMs, 'signInAttemptsPerAddress', 'Too many sign-in attempts from your address');
    }
    if (!authPerAccount) return NO_OP;
    const { granted, retryAfterMs } = await limits.buckets.take(authPerAccount, account);
    if (!granted) refuse(ctx, authPerAccount, retryAfterMs, 'signInAttemptsPerAccount', 'Too many failed sign-in attempts for this account');
  } catch (err) {
    if (err instanceof LimitExceededError) throw err;
    // Redis being away must not lock everyone out; the attempt goes ahead unthrottled.
    log.warn('sign-in throttle not applied: Redis unavailable', { error: err instanceof Error ? err.message : String(err) });
    return NO_OP;
  }
  return {
    succeeded: () =>
      limits.buckets.refund(authPerAccount, account).catch((err) => {
        log.warn('sign-in throttle refund failed', { error: err instanceof Error ? err.message : String(err) });
      }),
  };
}

function refuse(ctx: ThrottleContext, spec: BucketSpec, retryAfterMs: number, limit: string, what: string): never {
  const seconds = retryAfterSeconds(retryAfterMs);
  ctx.noteRetryAfter(seconds);
  throw new LimitExceededError(
    limit,
    spec.burst,
    `${what}; try again in ${seconds} s`,
    seconds,
  );
}
