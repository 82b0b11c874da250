// Live training progress. Each subscription subscribes to its topic before reading the database,
// then drops live messages the replay already covered: no gap, no duplicate.
import type { RequestContext } from '../../graphql/context.js';
import { reviveDates } from '../../events/publisher.js';
import { AuthenticationError, NotFoundError } from '../../lib/errors.js';
import { TERMINAL_STATUSES } from './lifecycle.js';
import type { TrainingSessionRecord } from './records.js';
import type { EpochMetricRecord } from './service.js';

const SESSION_DATES = ['createdAt', 'updatedAt', 'queuedAt', 'startedAt', 'finishedAt', 'cancelRequestedAt'] as const;

export function reviveSession(s: TrainingSessionRecord): TrainingSessionRecord {
  return reviveDates(s, SESSION_DATES);
}

// Every subscriber of a topic receives the same parsed message object (see events/topics.ts), so
// its revived copy is made once per message, not once per subscriber. Nothing downstream mutates it.
const revived = new WeakMap<object, unknown>();
function once<T extends object>(raw: T, revive: (raw: T) => T): T {
  let value = revived.get(raw) as T | undefined;
  if (value === undefined) {
    value = revive(raw);
    revived.set(raw, value);
  }
  return value;
}
const reviveEpoch = (e: EpochMetricRecord) => reviveDates(e, ['createdAt']);

// How often a live subscription re-checks its caller's credentials (revoked keys, removed members).
const REAUTHORIZE_EVERY_MS = 30_000;

/**
 * Re-checks the caller's credentials at most every subscriptionReauthMs; call per item. Inline
 * rather than a generator wrapped around the source: on the fan-out path each layer of async
 * iteration costs promises per item per subscriber.
 */
export function reauthorizer(ctx: RequestContext): () => Promise<void> | undefined {
  let checkedAt = Date.now();
  const check = async () => {
    if (!(await ctx.stillAuthorized())) throw new AuthenticationError('Your credentials are no longer valid; sign in again');
    checkedAt = Date.now();
  };
  return () => (Date.now() - checkedAt > ctx.config.subscriptionReauthMs ? check() : undefined);
}

/** Passes items through, re-checking the caller's credentials as `reauthorizer` does. */
export async function* reauthorized<T>(ctx: RequestContext, source: AsyncIterable<T>): AsyncGenerator<T> {
  const reauthorize = reauthorizer(ctx);
  for await (const item of source) {
    await reauthorize();
    yield item;
  }
}

async function authorizedSession(ctx: RequestContext, sessionId: string): Promise<TrainingSessionRecord> {
  await ctx.requirePrincipal();
  const session = await ctx.services.training.get(sessionId);
  // Another organization's session looks exactly like a missing one.
  if (!session) throw new NotFoundError('TrainingSession', sessionId);
  return session;
}

/** The session now, then every change, until it reaches a final status. */
export async function* sessionUpdates(ctx: RequestContext, sessionId: string): AsyncGenerator<TrainingSessionRecord> {
  const first = await authorizedSession(ctx, sessionId);
  const live = await ctx.app.topics.subscribe<TrainingSessionRecord>(ctx.app.redisNames.sessionTopic(sessionId), { signal: ctx.signal });
  try {
    // Read again after subscribing: a change between the first read and the subscription is not lost.
    ctx.services.training.byId.clear(sessionId);
    let current = (await ctx.services.training.get(sessionId)) ?? first;
    yield current;
    if (TERMINAL_STATUSES.includes(current.status)) return;
    const reauthorize = reauthorizer(ctx);
    for await (const raw of live) {
      const pending = reauthorize();
      if (pending) await pending;
      const next = once(raw, reviveSession);
      // Updates can only move forward in time; an older snapshot (a late duplicate) is skipped.
      if (next.updatedAt.getTime() < current.updatedAt.getTime()) continue;
      current = next;
      yield current;
      if (TERMINAL_STATUSES.includes(current.status)) return;
    }
  } finally {
    await live.return();
  }
}

/**
 * Stored epochs after `sinceEpoch`, then live ones, each exactly once, in epoch order; ends after
 * the session reaches a final status (every epoch is published before the status that ends it).
 */
export async function* epochUpdates(
  ctx: RequestContext,
  sessionId: string,
  sinceEpoch: number,
): AsyncGenerator<EpochMetricRecord> {
  await authorizedSession(ctx, sessionId);
  const { topics, redisNames } = ctx.app;
  // One subscription on both topics: epochs, and the status change that ends the stream.
  const live = await topics.subscribe<EpochMetricRecord | TrainingSessionRecord>([
    redisNames.epochsTopic(sessionId),
    redisNames.sessionTopic(sessionId),
  ], { signal: ctx.signal });
  try {
    let last = sinceEpoch;
    const stored = await ctx.services.training.epochsAfter(sessionId, last);
    for (const e of stored) {
      yield e;
      last = e.epoch;
    }
    ctx.services.training.byId.clear(sessionId);
    const now = await ctx.services.training.get(sessionId);
    if (!now || TERMINAL_STATUSES.includes(now.status)) return;
    const reauthorize = reauthorizer(ctx);
    for await (const item of live) {
      const pending = reauthorize();
      if (pending) await pending;
      if ('status' in item) {
        if (TERMINAL_STATUSES.includes(item.status)) return;
        continue;
      }
      if (item.epoch <= last) continue;
      last = item.epoch;
      yield once(item, reviveEpoch);
    }
  } finally {
    await live.return();
  }
}

export interface LogLine {
  sessionId: string;
  attempt: number;
  stream: 'stdout' | 'stderr';
  line: string;
  ts: string;
}

/** The trainer's stdout/stderr lines as the node publishes them (live only; nothing is stored). */
export async function* logLines(ctx: RequestContext, sessionId: string): AsyncGenerator<LogLine> {
  await authorizedSession(ctx, sessionId);
  const live = await ctx.app.topics.subscribe<LogLine>(ctx.app.redisNames.logsChannel(sessionId), { signal: ctx.signal });
  try {
    for await (const line of reauthorized(ctx, live)) yield line;
  } finally {
    await live.return();
  }
}
