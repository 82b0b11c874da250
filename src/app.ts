// Process-wide dependencies, built once at start and shared by every request.
import type { MikroORM } from '@mikro-orm/postgresql';
import type { Config } from './config.js';
import type { Sql } from './db/sql.js';
import { SecretBox } from './lib/secret-box.js';
import { StorageRegistry } from './storage/index.js';

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
}

export function createApp(config: Config, orm: MikroORM, sql: Sql): App {
  return {
    config,
    orm,
    sql,
    secretBox: new SecretBox(config.secretKeys),
    storage: new StorageRegistry(config.storage, listeningUrl(config.host, config.port)),
  };
}

/** http://HOST:PORT as a client on this machine reaches it (a wildcard address becomes loopback). */
export function listeningUrl(host: string, port: number): string {
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}
