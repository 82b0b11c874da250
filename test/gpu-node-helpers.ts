// Shared pieces of the gpu-node tests: tiny datasets and run configs, a private redis-server,
// a logger that records, and polling.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from '../src/lib/log.js';

export const PYTHON = '/usr/bin/python3';
export const TRAINERS = path.resolve(import.meta.dirname, '..', 'trainers');

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), `cvtrain-gpu-node-${prefix}-`));
}

/** The trainers' synthetic shapes dataset (image_folder for classifiers: fastest on CPU). */
export function makeDataset(out: string, format: 'yolo' | 'coco' | 'image_folder' = 'image_folder', images = 8): string {
  execFileSync(PYTHON, ['-m', 'cvtrain', 'make-dataset', 'shapes', '--out', out, '--format', format, '--images', String(images), '--seed', '0', '--size', '64'], {
    env: { ...process.env, PYTHONPATH: TRAINERS },
    stdio: 'pipe',
  });
  return out;
}

/** run.json of a classifier that trains in about a second per epoch on a CPU. */
export function tinyConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    task: 'classification',
    framework: 'torchvision',
    architecture: 'mobilenet_v3_small',
    epochs: 2,
    batch_size: 4,
    image_size: 32,
    max_batches_per_epoch: 1,
    max_val_batches: 1,
    num_workers: 0,
    export: [],
    progress_interval_s: 0,
    ...overrides,
  };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** A redis-server of the test's own (no persistence: a restart loses everything, run_id changes). */
export class PrivateRedis {
  private child: ChildProcess | null = null;
  constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async create(): Promise<PrivateRedis> {
    return new PrivateRedis(await freePort());
  }

  async start(): Promise<void> {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
      stdio: 'ignore',
    });
    this.child = child;
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const s = net.connect(this.port, '127.0.0.1', () => {
            s.end();
            resolve(true);
          });
          s.on('error', () => resolve(false));
        }),
      5000,
      'redis-server to listen',
    );
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    this.child = null;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }
}

export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, what = 'condition', everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface RecordedLine {
  level: string;
  component: string;
  msg: string;
  fields?: Record<string, unknown>;
}

/** A Logger that keeps lines in memory (and prints them when GPU_NODE_TEST_LOG=1). */
export function recordingLogger(lines: RecordedLine[] = [], component = 'gpu-node'): Logger & { lines: RecordedLine[] } {
  const print = process.env.GPU_NODE_TEST_LOG === '1';
  const make = (c: string): Logger => {
    const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
      lines.push({ level, component: c, msg, fields });
      if (print) process.stderr.write(`${level} [${c}] ${msg} ${fields ? JSON.stringify(fields) : ''}\n`);
    };
    return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (sub) => make(`${c}:${sub}`) };
  };
  return Object.assign(make(component), { lines });
}
