// Token buckets kept in Redis, so every API replica draws on the same allowance: sign-in and
// sign-up throttling (src/modules/orgs/throttle.ts) and the request rate limits of the whole API
// (src/graphql/rate-limit.ts). Settings: config.rateLimits (src/config.ts, README "Rate limits").
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { Redis } from 'ioredis';
import { createLogger } from './log.js';

const log = createLogger('rate-limit');

export interface BucketSpec {
  /** Part of the Redis key, so buckets of different limits never share state. */
  name: string;
  /** Sustained refill; 0 means the limit is off. */
  ratePerSecond: number;
  /** The bucket's size: how many a caller may spend at once after being idle. */
  burst: number;
}

export interface Take {
  /** Tokens granted (0 when refused). */
  granted: number;
  /** When refused: milliseconds until one token is available again. */
  retryAfterMs: number;
}

/**
 * One atomic step on one bucket: refill by the time elapsed since the last step (Redis's own
 * clock, so replicas' clocks need not agree), then take up to ARGV[3] tokens (at least one, or
 * refuse with the wait until one is there), or give -ARGV[3] back when it is negative. A bucket
 * left alone long enough to be full again expires, which is the same as full.
 */
const BUCKET_LUA = `
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then tokens = math.min(burst, tokens + (now - at) * rate) end
local granted = 0
local retry = 0
if want < 0 then
  tokens = math.min(burst, tokens - want)
elseif tokens >= 1 then
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
else
  retry = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
return { granted, retry }
`;

type BucketRedis = Redis & {
  cvtrainTokenBucket(key: string, rate: number, burst: number, want: number): Promise<[number, number]>;
};

export class TokenBuckets {
  private readonly redis: BucketRedis;

  constructor(redis: Redis, private readonly prefix: string) {
    redis.defineCommand('cvtrainTokenBucket', { numberOfKeys: 1, lua: BUCKET_LUA });
    this.redis = redis as BucketRedis;
  }

  /** True while the Redis connection is up; the request path does not wait for a reconnect. */
  get ready(): boolean {
    return this.redis.status === 'ready';
  }

  /** Takes up to `want` tokens (at least one) from `id`'s bucket, or says how long to wait. */
  async take(spec: BucketSpec, id: string, want = 1): Promise<Take> {
    const [granted, retryAfterMs] = await this.redis.cvtrainTokenBucket(this.key(spec, id), spec.ratePerSecond, spec.burst, want);
    return { granted, retryAfterMs };
  }

  /** Gives tokens back (never above the bucket's size). */
  async refund(spec: BucketSpec, id: string, n = 1): Promise<void> {
    await this.redis.cvtrainTokenBucket(this.key(spec, id), spec.ratePerSecond, spec.burst, -n);
  }

  private key(spec: BucketSpec, id: string) {
    return `${this.prefix}rl:${spec.name}:${id}`;
  }
}

// How long tokens taken from Redis in advance stay usable in this process: short, so that a
// replica holding some does not let a caller exceed the bucket's size by much after a pause.
const LEASE_MS = 1000;
const SWEEP_MS = 5000;

interface Lease {
  tokens: number;
  expires: number;
  deniedUntil: number;
  pending: Promise<void> | null;
}

/**
 * The request limits' hot path. One Redis round trip per request cost more than the 5% of
 * throughput it may (bench/RESULTS.md, "Rate limits"), so each process takes tokens from the
 * shared bucket a few at a time (about 1/16 of the burst, at most a quarter second's refill) and
 * spends them locally, and remembers a refusal until its retry time. Tokens are always taken from
 * Redis before they are spent, so replicas together never exceed the sustained rate; a process's
 * unspent lease lapses after LEASE_MS. With a small burst the lease is one token: exact.
 */
export class LeasedBuckets {
  private readonly leases = new Map<string, Lease>();
  private readonly leaseSize: number;
  private readonly sweeper: NodeJS.Timeout;
  private warnedAt = 0;

  constructor(private readonly buckets: TokenBuckets, readonly spec: BucketSpec) {
    this.leaseSize = Math.max(1, Math.min(Math.floor(spec.burst / 16), Math.floor(spec.ratePerSecond / 4)));
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  /**
   * 0 when the request may go ahead, otherwise milliseconds until it may be retried. Synchronous
   * while this process holds tokens for `id` (most requests of a busy caller).
   */
  take(id: string): number | Promise<number> {
    const now = Date.now();
    const lease = this.leases.get(id);
    if (lease) {
      if (lease.deniedUntil > now) return lease.deniedUntil - now;
      if (lease.tokens > 0 && lease.expires > now) {
        lease.tokens--;
        return 0;
      }
    }
    return this.refill(id);
  }

  private async refill(id: string): Promise<number> {
    for (;;) {
      const now = Date.now();
      let lease = this.leases.get(id);
      if (!lease) {
        lease = { tokens: 0, expires: 0, deniedUntil: 0, pending: null };
        this.leases.set(id, lease);
      }
      if (lease.deniedUntil > now) return lease.deniedUntil - now;
      if (lease.tokens > 0 && lease.expires > now) {
        lease.tokens--;
        return 0;
      }
      // Concurrent requests of one caller share one round trip, then spend what it brought.
      if (lease.pending) {
        await lease.pending;
        continue;
      }
      if (!this.buckets.ready) return this.failOpen(new Error('Redis is not connected'));
      const current = lease;
      let failure: unknown = null;
      current.pending = this.buckets
        .take(this.spec, id, this.leaseSize)
        .then(({ granted, retryAfterMs }) => {
          const at = Date.now();
          if (granted > 0) {
            current.tokens = granted;
            current.expires = at + LEASE_MS;
          } else {
            current.tokens = 0;
            current.deniedUntil = at + retryAfterMs;
          }
        })
        .catch((err) => {
          failure = err;
        })
        .finally(() => {
          current.pending = null;
        });
      await current.pending;
      if (failure) return this.failOpen(failure);
    }
  }

  // The limits protect the API; they must not take it down with Redis. Refusing everyone while
  // Redis is away would, so requests go ahead unlimited until it is back.
  private failOpen(err: unknown): number {
    const now = Date.now();
    if (now - this.warnedAt > 10_000) {
      this.warnedAt = now;
      log.warn('request rate limit not applied: Redis unavailable', {
        limit: this.spec.name,
        error: err instanceof Error ? err.message : String(err),
      });
    }
    return 0;
  }

  private sweep() {
    const now = Date.now();
    for (const [id, lease] of this.leases) {
      if (!lease.pending && lease.deniedUntil <= now && (lease.tokens === 0 || lease.expires <= now)) {
        this.leases.delete(id);
      }
    }
  }

  close() {
    clearInterval(this.sweeper);
    this.leases.clear();
  }
}

/** Seconds for a Retry-After header: whole seconds, at least 1. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/**
 * The client's address: the socket's peer, or with `trustedProxies` > 0 the address the
 * outermost trusted proxy saw, from X-Forwarded-For. Each proxy appends the address it received
 * the request from, so the entries right of it are the trusted hops and anything left of them was
 * written by the client, which could put any address there; only `trustedProxies` entries from
 * the right are read, and only while they are addresses.
 */
export function clientAddress(req: IncomingMessage, trustedProxies: number): string | null {
  let address = req.socket.remoteAddress ?? null;
  if (trustedProxies > 0 && address) {
    const header = req.headers['x-forwarded-for'];
    const hops = (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((h) => stripPort(h.trim()))
      .filter(Boolean);
    for (let i = 0; i < trustedProxies && hops.length > 0; i++) {
      const hop = hops.pop()!;
      if (!isIP(hop)) break;
      address = hop;
    }
  }
  return address;
}

function stripPort(hop: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  if (bracketed) return bracketed[1];
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(hop);
  return v4 ? v4[1] : hop;
}

/**
 * The bucket an address belongs to. An IPv6 user is usually given a whole /64 and can pick any
 * address in it, so IPv6 addresses share their /64's bucket; IPv4-mapped addresses are IPv4.
 */
export function addressBucket(address: string | null): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1];
  if (isIP(address) !== 6) return address;
  const bare = address.split('%')[0].toLowerCase();
  const [head, tail] = bare.includes('::') ? bare.split('::') : [bare, null];
  const front = head ? head.split(':') : [];
  const back = tail ? tail.split(':') : [];
  // A trailing dotted IPv4 part stands for two groups; it only ever falls in the dropped half.
  const backGroups = back.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
  const groups = tail === null ? front : [...front, ...Array(Math.max(0, 8 - front.length - backGroups)).fill('0'), ...back];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

export interface RateLimitSettings {
  /** Every GraphQL request (HTTP) and operation (websocket) of one user or API key. */
  requests: BucketSpec;
  /** Requests without valid credentials, per client address. */
  anonymous: BucketSpec;
  /** Sign-in and sign-up attempts per client address, every attempt counted. */
  authPerAddress: BucketSpec;
  /** Sign-in and sign-up attempts per account (email), failed attempts counted. */
  authPerAccount: BucketSpec;
  /** Proxies in front of the API whose X-Forwarded-For entry is believed; 0: none. */
  trustProxy: number;
}

/** The limits of one API process; a bucket spec is null when its limit is off. */
export class RateLimits {
  readonly buckets: TokenBuckets;
  readonly requests: LeasedBuckets | null;
  readonly anonymous: LeasedBuckets | null;
  readonly authPerAddress: BucketSpec | null;
  readonly authPerAccount: BucketSpec | null;
  readonly trustProxy: number;

  constructor(redis: Redis, prefix: string, settings: RateLimitSettings) {
    const on = (spec: BucketSpec) => (spec.ratePerSecond > 0 ? spec : null);
    this.buckets = new TokenBuckets(redis, prefix);
    this.requests = on(settings.requests) && new LeasedBuckets(this.buckets, settings.requests);
    this.anonymous = on(settings.anonymous) && new LeasedBuckets(this.buckets, settings.anonymous);
    this.authPerAddress = on(settings.authPerAddress);
    this.authPerAccount = on(settings.authPerAccount);
    this.trustProxy = settings.trustProxy;
  }

  close() {
    this.requests?.close();
    this.anonymous?.close();
  }
}
