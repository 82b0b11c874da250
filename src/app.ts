// Process-wide dependencies, built once at start and shared by every request.
import type { MikroORM } from '@mikro-orm/postgresql';
import type { Config } from './config.js';
import type { Sql } from './db/sql.js';
import { RateLimits } from './lib/rate-limit.js';
import { SecretBox } from './lib/secret-box.js';
import { StorageRegistry } from './storage/index.js';
import { createPublisher, type Publisher } from './events/publisher.js';
import { createTopics, type Topics } from './events/topics.js';
import { Orchestrator } from './orchestrator/index.js';
import { PlatformProvider } from './providers/platform.js';
import { ProviderRegistry } from './providers/registry.js';
import { createRedis } from './redis.js';
import { redisNames, type RedisNames } from '../protocol/index.js';

export interface App {
  config: Config;
  orm: MikroORM;
  /** Raw reads on hot paths (see src/db/rows.ts). */
  sql: Sql;
  secretBox: SecretBox;
  /**
   * The platform's storage and cached clients of organizations' own storage profiles. Services
   * reach it through src/modules/storage/service.ts, which scopes keys to the organization.
   */
  storage: StorageRegistry;
  redisNames: RedisNames;
  /** Pub/sub through Redis: what subscriptions listen to. */
  topics: Topics;
  publisher: Publisher;
  providers: ProviderRegistry;
  orchestrator: Orchestrator;
  /** Request rate limits and sign-in throttling, kept in Redis (src/lib/rate-limit.ts). */
  rateLimits: RateLimits;
  /** Closes every client this app opened (not the ORM or SQL pool, which the caller owns). */
  close(): Promise<void>;
}

export function createApp(config: Config, orm: MikroORM, sql: Sql): App {
  const redisNamesForApp = redisNames(config.redisPrefix);
  const topics = createTopics(config.redisUrl);
  const publisher = createPublisher(topics, redisNamesForApp);
  const control = createRedis(config, 'control');
  const providers = new ProviderRegistry().register(new PlatformProvider(config, sql, control));
  const orchestrator = new Orchestrator(sql, providers, publisher);
  const storage = new StorageRegistry(config.storage, listeningUrl(config.host, config.port));
  // Its own connection, which gives up quickly: a limit waits for Redis no longer than this.
  const limitsRedis = createRedis(config, 'rate-limits', { maxRetriesPerRequest: 1, commandTimeout: 1000 });
  const rateLimits = new RateLimits(limitsRedis, config.redisPrefix, config.rateLimits);
  return {
    config,
    orm,
    sql,
    secretBox: new SecretBox(config.secretKeys),
    storage,
    redisNames: redisNamesForApp,
    topics,
    publisher,
    providers,
    orchestrator,
    rateLimits,
    async close() {
      rateLimits.close();
      limitsRedis.disconnect();
      await providers.close();
      await topics.close();
      control.disconnect();
      await storage.close();
    },
  };
}

/** http://HOST:PORT as a client on this machine reaches it (a wildcard address becomes loopback). */
export function listeningUrl(host: string, port: number): string {
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}
