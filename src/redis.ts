// Redis connections and names. Every key, queue and channel carries CVTRAIN_REDIS_PREFIX, so
// several deployments (or test files) share one Redis without seeing each other.
import { Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.js';

export const GPU_QUEUE = 'gpu-training';

export interface RedisNames {
  prefix: string;
  /** bee-queue's own key prefix (it appends ":<queue>:..."). */
  queuePrefix: string;
  eventsStream: string;
  ingestGroup: string;
  controlChannel: string;
  logsChannel(sessionId: string): string;
  /** Pub/sub topics the API's subscriptions listen on. */
  sessionTopic(sessionId: string): string;
  epochsTopic(sessionId: string): string;
  nodesTopic: string;
  /** Revoked API keys and removed members: every replica closes their websocket connections. */
  credentialsTopic: string;
}

export function redisNames(prefix: string): RedisNames {
  return {
    prefix,
    queuePrefix: `${prefix}bq`,
    eventsStream: `${prefix}events`,
    ingestGroup: 'ingest',
    controlChannel: `${prefix}node-control`,
    logsChannel: (id) => `${prefix}logs:${id}`,
    sessionTopic: (id) => `${prefix}session:${id}`,
    epochsTopic: (id) => `${prefix}epochs:${id}`,
    nodesTopic: `${prefix}nodes`,
    credentialsTopic: `${prefix}credentials-revoked`,
  };
}

export function createRedis(config: Pick<Config, 'redisUrl'>, name: string, extra: RedisOptions = {}): Redis {
  const client = new Redis(config.redisUrl, {
    connectionName: `cvtrain:${name}`,
    // Commands wait for a reconnect instead of failing while Redis restarts.
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(times * 100, 2000),
    lazyConnect: false,
    ...extra,
  });
  // Connection errors are retried by ioredis; without a listener Node would crash on them.
  client.on('error', () => undefined);
  return client;
}

/** Connection options in the shape bee-queue's bundled `redis` v3 client expects. */
export function beeQueueRedisOptions(redisUrl: string) {
  const u = new URL(redisUrl);
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    db: Number(u.pathname.replace('/', '') || 0),
    password: u.password ? decodeURIComponent(u.password) : undefined,
    tls: u.protocol === 'rediss:' ? {} : undefined,
  };
}
