// Real storage services on loopback for the storage tests: the local backend behind its HTTP
// handler, s3rver (S3), and Microsoft's Azurite (Azure Blob). Nothing here touches the network.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { AzureStorage } from '../../src/storage/azure.js';
import { createLocalStorageHandler } from '../../src/storage/local-http.js';
import { LocalStorage } from '../../src/storage/local.js';
import { S3Storage } from '../../src/storage/s3.js';
import { freePort } from './processes.js';

const require = createRequire(import.meta.url);

export const S3RVER_KEY = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
// Azurite's documented development account; it is public and only ever valid against Azurite.
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface LocalTarget {
  storage: LocalStorage;
  url: string;
  root: string;
  server: http.Server;
  close(): Promise<void>;
}

/** The local backend in a temp directory, its links served by a bare HTTP server with the handler. */
export async function startLocal(opts: { maxUploadBytes?: number; now?: () => number } = {}): Promise<LocalTarget> {
  const root = mkdtempSync(path.join(tmpdir(), 'cvtrain-storage-'));
  const storage = new LocalStorage({ root, secret: randomBytes(32), publicUrl: 'http://127.0.0.1:1', now: opts.now });
  const handler = createLocalStorageHandler(storage, { maxUploadBytes: opts.maxUploadBytes ?? 64 * 1024 * 1024 });
  const server = http.createServer((req, res) => {
    if (!handler(req, res)) res.writeHead(404).end('not a storage path');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  storage.setPublicUrl(url);
  return {
    storage,
    url,
    root,
    server,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface S3Target {
  storage: S3Storage;
  endpoint: string;
  bucket: string;
  directory: string;
  process: ChildProcess;
  close(): Promise<void>;
}

// Test services exit when the test process goes away, even if it is killed before its
// afterAll runs: their stdin is a pipe from it, which closes then.
const EXIT_WITH_PARENT = `process.stdin.on('end', () => process.exit(0)); process.stdin.on('error', () => process.exit(0)); process.stdin.resume();`;

// s3rver encrypts its ListObjectsV2 continuation tokens with DES, which OpenSSL 3 (Node 17+) only
// offers through its legacy provider; in-process, every second page of a listing fails with 500.
// So it runs as a child with --openssl-legacy-provider (which also keeps its memory out of ours).
const S3RVER_MAIN = `
const S3rver = require(process.env.S3RVER_PATH);
const server = new S3rver({
  address: '127.0.0.1', port: 0, silent: true, directory: process.env.S3RVER_DIR,
  configureBuckets: [{ name: process.env.S3RVER_BUCKET }],
  vhostBuckets: false, // path-style only: virtual-host buckets would need DNS names
});
server.run().then((address) => process.stdout.write('LISTENING ' + address.port + '\\n'));
process.on('SIGTERM', () => process.exit(0));
${EXIT_WITH_PARENT}
`;

/** s3rver on loopback, one bucket, and an S3Storage pointed at it with 5 MiB parts (so multipart is cheap to reach). */
export async function startS3rver(): Promise<S3Target> {
  const directory = mkdtempSync(path.join(tmpdir(), 'cvtrain-s3rver-'));
  const bucket = 'cvtrain-test';
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', S3RVER_MAIN], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, S3RVER_PATH: require.resolve('s3rver'), S3RVER_DIR: directory, S3RVER_BUCKET: bucket },
  });
  const port = Number(await waitForLine(child, /LISTENING (\d+)/, 's3rver'));
  const endpoint = `http://127.0.0.1:${port}`;
  const storage = new S3Storage({
    kind: 's3',
    bucket,
    region: 'us-east-1',
    endpoint,
    forcePathStyle: true,
    credentials: S3RVER_KEY,
    partSizeBytes: 5 * 1024 * 1024,
  });
  return {
    storage,
    endpoint,
    bucket,
    directory,
    process: child,
    async close() {
      await storage.close();
      await stopChild(child);
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** Resolves with the first capture group of the first output line matching `pattern`. */
function waitForLine(child: ChildProcess, pattern: RegExp, name: string): Promise<string> {
  let output = '';
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${output}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const m = pattern.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1] ?? m[0]);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code}:\n${output}`));
    });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(killer);
}

export interface AzureTarget {
  storage: AzureStorage;
  endpoint: string;
  container: string;
  process: ChildProcess;
  close(): Promise<void>;
}


/**
 * Azurite's blob service as a child process (it is a CLI, not a library), with telemetry off so
 * it never tries to reach the network. `onDisk` keeps blobs in a temp directory instead of memory.
 */
export async function startAzurite(opts: { onDisk?: boolean } = {}): Promise<AzureTarget> {
  const port = await freePort();
  const location = mkdtempSync(path.join(tmpdir(), 'cvtrain-azurite-'));
  const main = require.resolve('azurite/dist/src/blob/main.js');
  const args = ['--blobHost', '127.0.0.1', '--blobPort', String(port), '--disableTelemetry', '--skipApiVersionCheck', '--loose'];
  args.push(...(opts.onDisk ? ['--location', location] : ['--inMemoryPersistence']));
  // Azurite's CLI entry, loaded after the exit-with-parent hook; it parses argv from index 2,
  // so the script path goes back where `node -e` leaves none.
  const wrapper = `${EXIT_WITH_PARENT} process.argv.splice(1, 0, ${JSON.stringify(main)}); require(${JSON.stringify(main)});`;
  const child = spawn(process.execPath, ['-e', wrapper, '--', ...args], { stdio: ['pipe', 'pipe', 'pipe'], cwd: location });
  await waitForLine(child, /successfully listens/, 'azurite');
  const endpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
  const container = 'cvtrain-test';
  const { BlobServiceClient, StorageSharedKeyCredential } = await import('@azure/storage-blob');
  await new BlobServiceClient(endpoint, new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))
    .getContainerClient(container)
    .createIfNotExists();
  // Pages of 100 so the listing test crosses page boundaries with a few hundred blobs.
  const storage = new AzureStorage({ kind: 'azure', accountName: AZURITE_ACCOUNT, accountKey: AZURITE_KEY, container, endpoint }, 100);
  return {
    storage,
    endpoint,
    container,
    process: child,
    async close() {
      await storage.close();
      await stopChild(child);
      rmSync(location, { recursive: true, force: true });
    },
  };
}

/**
 * `total` bytes of varied data, produced chunk by chunk and never held whole; `sha256()` is the
 * digest of everything produced, valid once the stream has ended.
 */
export function generatedStream(total: number, chunkSize = 1024 * 1024): Readable & { sha256(): string } {
  const block = randomBytes(chunkSize);
  const hash = createHash('sha256');
  let produced = 0;
  let n = 0;
  const stream = new Readable({
    read() {
      if (produced >= total) {
        this.push(null);
        return;
      }
      const size = Math.min(chunkSize, total - produced);
      const chunk = Buffer.from(block.subarray(0, size));
      // Every chunk differs, so a backend that mixed up or repeated chunks changes the digest.
      if (size >= 4) chunk.writeUInt32BE(n++ >>> 0, 0);
      produced += size;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  let digest: string | null = null;
  return Object.assign(stream, { sha256: () => (digest ??= hash.digest('hex')) });
}
