// Which interpreter runs the trainers, and the node's configuration checks.
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadNodeConfig, NodeConfigError } from '../gpu-node/config.js';
import { PythonNotFoundError, resolvePython } from '../gpu-node/python.js';
import { tempDir } from './gpu-node-helpers.js';

function script(dir: string, name: string, body: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, `#!/bin/bash\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

describe('python discovery', () => {
  it('CVTRAIN_PYTHON wins when it can import torch', async () => {
    const dir = tempDir('py');
    // A wrapper around the real interpreter: proves the explicit one is used, not PATH's.
    const wrapper = script(dir, 'my-python', 'exec /usr/bin/python3 "$@"');
    const info = await resolvePython(wrapper, '/nonexistent');
    expect(info.python).toBe(wrapper);
    expect(info.torchVersion).toMatch(/^\d+\.\d+/);
  });

  it('a CVTRAIN_PYTHON that cannot import torch fails clearly (no fallback)', async () => {
    const dir = tempDir('py-bad');
    const bad = script(dir, 'python-without-torch', `echo "ModuleNotFoundError: No module named 'torch'" >&2; exit 1`);
    const err = await resolvePython(bad).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PythonNotFoundError);
    expect((err as Error).message).toBe(`CVTRAIN_PYTHON cannot run the trainers:\n  - ${bad}: ModuleNotFoundError: No module named 'torch'`);

    const missing = await resolvePython('/nonexistent/python3').catch((e: unknown) => e);
    expect((missing as Error).message).toMatch(/\/nonexistent\/python3: not found/);
  });

  it('default: python3 on PATH is skipped when it lacks torch; /usr/bin/python3 is used', async () => {
    const dir = tempDir('py-path');
    script(dir, 'python3', `echo "ModuleNotFoundError: No module named 'torch'" >&2; exit 1`);
    const info = await resolvePython(null, dir);
    expect(info.python).toBe('/usr/bin/python3');
  });

  it('default: the first python3 on PATH is used when it has torch', async () => {
    const dir = tempDir('py-path-ok');
    const good = script(dir, 'python3', 'exec /usr/bin/python3 "$@"');
    const info = await resolvePython(null, dir);
    expect(info.python).toBe(good);
  });
});

describe('gpu-node config', () => {
  it('names every missing or bad variable', () => {
    const err = (() => {
      try {
        loadNodeConfig({ REDIS_URL: 'http://x', CVTRAIN_NODE_SLOTS: '0' });
      } catch (e) {
        return e as NodeConfigError;
      }
      throw new Error('no error');
    })();
    expect(err).toBeInstanceOf(NodeConfigError);
    expect(err.problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^REDIS_URL: must be a redis:\/\//),
        expect.stringMatching(/^CVTRAIN_API_URL: required/),
        expect.stringMatching(/^CVTRAIN_NODE_TOKEN: required/),
        expect.stringMatching(/^CVTRAIN_NODE_SLOTS: /),
      ]),
    );
  });

  it('defaults, and a node id generated once and kept in the data dir', () => {
    const dataDir = tempDir('cfg');
    const env = { CVTRAIN_API_URL: 'http://127.0.0.1:4000/', CVTRAIN_NODE_TOKEN: 't', CVTRAIN_NODE_DATA_DIR: dataDir };
    const a = loadNodeConfig(env);
    expect(a).toMatchObject({
      redisUrl: 'redis://127.0.0.1:6379',
      apiUrl: 'http://127.0.0.1:4000',
      redisPrefix: 'cvtrain:',
      python: null,
      slots: null,
      cancelGraceMs: 15_000,
      dataDir,
    });
    expect(existsSync(path.join(a.trainersDir, 'cvtrain', '__main__.py'))).toBe(true);
    expect(a.nodeId).toMatch(/^[A-Za-z0-9._-]+-[0-9a-f]{8}$/);
    expect(readFileSync(path.join(dataDir, 'node-id'), 'utf8').trim()).toBe(a.nodeId);
    expect(loadNodeConfig(env).nodeId).toBe(a.nodeId);
    expect(loadNodeConfig({ ...env, CVTRAIN_NODE_ID: 'gpu-7' }).nodeId).toBe('gpu-7');
  });
});
