// Process-wide dependencies, built once at start and shared by every request.
import type { MikroORM } from '@mikro-orm/postgresql';
import type { Config } from './config.js';
import { SecretBox } from './lib/secret-box.js';

export interface App {
  config: Config;
  orm: MikroORM;
  secretBox: SecretBox;
}

export function createApp(config: Config, orm: MikroORM): App {
  return { config, orm, secretBox: new SecretBox(config.secretKeys) };
}
