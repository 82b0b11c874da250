// GPU discovery through node-nvidia-smi, run against a real `nvidia-smi -q -x` capture served by
// a fake nvidia-smi placed first on PATH; and the no-GPU path (one CPU slot).
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { queryGpus } from '../gpu-node/gpus.js';
import { planSlots } from '../gpu-node/node.js';
import { tempDir } from './gpu-node-helpers.js';

// The repository's copy of the shared capture (fixtures/README.md); CVTRAIN_SHARED_DIR overrides.
const FIXTURE = path.join(
  process.env.CVTRAIN_SHARED_DIR || path.resolve(import.meta.dirname, '..'),
  'fixtures',
  'gpu',
  'nvidia-smi-q-x.h200.xml',
);
const originalPath = process.env.PATH;

afterEach(() => {
  process.env.PATH = originalPath;
});

/** A fake nvidia-smi script in its own folder, put first on PATH; returns the folder. */
function fakeNvidiaSmi(body: string): string {
  const dir = tempDir('smi');
  const file = path.join(dir, 'nvidia-smi');
  writeFileSync(file, `#!/bin/bash\n${body}\n`);
  chmodSync(file, 0o755);
  process.env.PATH = `${dir}:${originalPath}`;
  return dir;
}

describe('gpus', () => {
  it('reads the H200 capture: name, uuid, memory, utilization, temperature, power', async () => {
    fakeNvidiaSmi(`[ "$1 $2" = "-q -x" ] || exit 9\ncat '${FIXTURE}'`);
    const q = await queryGpus();
    expect(q).toEqual({
      ok: true,
      driverVersion: expect.any(String),
      cudaVersion: expect.any(String),
      gpus: [
        {
          index: 0,
          name: 'NVIDIA H200',
          uuid: 'GPU-8afb0925-4a2f-1c1a-4134-5f6cfcb2a3b1',
          memoryTotalMiB: 143771,
          memoryUsedMiB: 0,
          utilizationPct: 0,
          temperatureC: 35,
          powerW: 80.54,
        },
      ],
    });
    expect(planSlots(q.ok ? q.gpus : [], null)).toEqual([{ index: 0, gpu: expect.objectContaining({ name: 'NVIDIA H200' }) }]);
  });

  it('several GPUs come back in nvidia-smi order with their indices; CVTRAIN_NODE_SLOTS caps the slots', async () => {
    const xml = readFileSync(FIXTURE, 'utf8');
    const gpuBlock = /<gpu id=[\s\S]*<\/gpu>/.exec(xml)![0];
    const second = gpuBlock
      .replace('GPU-8afb0925-4a2f-1c1a-4134-5f6cfcb2a3b1', 'GPU-00000000-0000-0000-0000-000000000002')
      .replace(/<gpu_temp>\d+ C<\/gpu_temp>/, '<gpu_temp>61 C</gpu_temp>')
      .replace(/<used>0 MiB<\/used>/, '<used>2048 MiB</used>');
    const dir = tempDir('smi-two');
    const two = path.join(dir, 'two.xml');
    writeFileSync(two, xml.replace(gpuBlock, gpuBlock + '\n' + second));
    fakeNvidiaSmi(`cat '${two}'`);
    const q = await queryGpus();
    if (!q.ok) throw new Error(q.reason);
    expect(q.gpus.map((g) => [g.index, g.uuid, g.temperatureC, g.memoryUsedMiB])).toEqual([
      [0, 'GPU-8afb0925-4a2f-1c1a-4134-5f6cfcb2a3b1', 35, 0],
      [1, 'GPU-00000000-0000-0000-0000-000000000002', 61, 2048],
    ]);
    expect(planSlots(q.gpus, null).map((s) => s.gpu?.index)).toEqual([0, 1]);
    expect(planSlots(q.gpus, 1).map((s) => s.gpu?.index)).toEqual([0]);
  });

  it('no nvidia-smi on PATH: no GPUs, one CPU slot', async () => {
    process.env.PATH = tempDir('empty-path');
    const q = await queryGpus();
    expect(q).toEqual({ ok: false, reason: 'nvidia-smi is not on PATH' });
    expect(planSlots([], null)).toEqual([{ index: 0, gpu: null }]);
    expect(planSlots([], 2)).toEqual([
      { index: 0, gpu: null },
      { index: 1, gpu: null },
    ]);
  });

  it('nvidia-smi that fails (no driver) or prints garbage: no GPUs, with the reason', async () => {
    fakeNvidiaSmi(`echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." ; exit 9`);
    const failed = await queryGpus();
    expect(failed.ok).toBe(false);
    if (!failed.ok) expect(failed.reason).toMatch(/Command failed/);

    fakeNvidiaSmi(`echo 'not xml <<<'`);
    const garbage = await queryGpus();
    expect(garbage.ok).toBe(false);
  });

  it('nvidia-smi that hangs: no GPUs after the timeout', async () => {
    fakeNvidiaSmi('sleep 5');
    const t0 = Date.now();
    const q = await queryGpus(300);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(q).toEqual({ ok: false, reason: 'nvidia-smi gave no answer within 300 ms' });
  });
});
