// Redis connections of the API. The names of keys, queues and channels it shares with the
// gpu-nodes are in protocol/redis.ts.
import { Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.js';

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
