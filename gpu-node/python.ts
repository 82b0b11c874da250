// Which interpreter runs the trainers. The machine's first python3 is often a pyenv/venv shim
// without torch (as here), while the distribution's /usr/bin/python3 has it; so the node asks each
// candidate to import torch instead of trusting PATH, and refuses to start when none can.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { PYTHON_PROBE_TIMEOUT_MS } from './config.js';

export class PythonNotFoundError extends Error {
  constructor(public readonly tried: { python: string; problem: string }[], explicit: boolean) {
    super(
      (explicit
        ? `CVTRAIN_PYTHON cannot run the trainers:`
        : `No Python interpreter that can import torch was found; set CVTRAIN_PYTHON to one that can. Tried:`) +
        tried.map((t) => `\n  - ${t.python}: ${t.problem}`).join(''),
    );
    this.name = 'PythonNotFoundError';
  }
}

export interface PythonInfo {
  python: string;
  torchVersion: string;
  cudaAvailable: boolean;
}

const PROBE = 'import sys, torch; print(torch.__version__); print(int(torch.cuda.is_available()))';

/** Runs the probe; resolves with what it found or the problem in one line. */
export async function probePython(
  python: string,
  timeoutMs = PYTHON_PROBE_TIMEOUT_MS,
): Promise<{ ok: true; info: PythonInfo } | { ok: false; problem: string }> {
  return new Promise((resolve) => {
    let out = '';
    let err = '';
    let settled = false;
    const done = (r: { ok: true; info: PythonInfo } | { ok: false; problem: string }) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(r);
      }
    };
    const child = spawn(python, ['-c', PROBE], { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done({ ok: false, problem: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', (e: NodeJS.ErrnoException) =>
      done({ ok: false, problem: e.code === 'ENOENT' ? 'not found' : e.message }),
    );
    child.on('close', (code) => {
      if (code === 0) {
        const [version, cuda] = out.trim().split('\n');
        done({ ok: true, info: { python, torchVersion: version ?? '?', cudaAvailable: cuda === '1' } });
      } else {
        const last = err.trim().split('\n').pop() || `exit code ${code}`;
        done({ ok: false, problem: last });
      }
    });
  });
}

/** `python3` as the shell would find it on PATH, or null. */
export function findOnPath(command: string, envPath = process.env.PATH ?? ''): string | null {
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/**
 * CVTRAIN_PYTHON when given (and it must work: an operator who names one means that one);
 * else the first of `python3` on PATH and /usr/bin/python3 that imports torch.
 */
export async function resolvePython(explicit: string | null, envPath = process.env.PATH ?? ''): Promise<PythonInfo> {
  const candidates = explicit
    ? [explicit]
    : [...new Set([findOnPath('python3', envPath), '/usr/bin/python3'].filter((p): p is string => p !== null))];
  const tried: { python: string; problem: string }[] = [];
  for (const python of candidates) {
    const result = await probePython(python);
    if (result.ok) return result.info;
    tried.push({ python, problem: result.problem });
  }
  throw new PythonNotFoundError(tried, explicit !== null);
}
