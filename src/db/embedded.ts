// Embedded PostgreSQL for laptops without a PostgreSQL server: PGlite (Postgres compiled to WASM)
// served over the wire protocol, so the rest of the platform talks to it like any other server.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { createLogger } from '../lib/log.js';

const log = createLogger('db:embedded');

export interface EmbeddedPostgres {
  url: string;
  stop(): Promise<void>;
}

export async function startEmbeddedPostgres(dataDir: string, reason: string): Promise<EmbeddedPostgres> {
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
  const dir = path.join(dataDir, 'pglite');
  mkdirSync(dir, { recursive: true });
  const db = await PGlite.create(dir);
  // PGlite has one session; the socket server multiplexes clients onto it, so callers must use a
  // pool of one connection (transactions from two pooled connections would interleave).
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 4 });
  await server.start();
  const conn = server.getServerConn();
  const port = Number(conn.split(':').pop());
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  log.warn(`running embedded PostgreSQL (PGlite): ${reason}`, { dataDir: dir, port });
  return {
    url,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}
