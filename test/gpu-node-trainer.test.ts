// TrainerProcess against the real trainer on a tiny generated dataset: each way a run can end
// gives its own typed outcome, and every event that comes out is valid against the schema.
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { validateTrainerEvent, type TrainerEvent } from '../protocol/index.js';
import {
  TrainerCrashedError,
  TrainerFailedError,
  TrainerProcess,
  TrainerStoppedError,
  type InvalidEventLine,
  type TrainerLogLine,
} from '../gpu-node/trainer-process.js';
import { makeDataset, PYTHON, tempDir, tinyConfig, TRAINERS } from './gpu-node-helpers.js';

let root: string;
let dataset: string;

beforeAll(() => {
  root = tempDir('trainer');
  dataset = makeDataset(path.join(root, 'shapes'));
});

function setup(name: string, overrides: Record<string, unknown> = {}, opts: { timeoutMs?: number | null; graceMs?: number; python?: string } = {}) {
  const dir = path.join(root, name);
  const configPath = path.join(root, `${name}.json`);
  writeFileSync(
    configPath,
    JSON.stringify({ ...tinyConfig(overrides), dataset: { path: dataset, format: 'image_folder' }, output_dir: dir, session_id: name }),
  );
  const trainer = new TrainerProcess({
    python: opts.python ?? PYTHON,
    trainersDir: TRAINERS,
    configPath,
    gpu: null,
    timeoutMs: opts.timeoutMs ?? null,
    graceMs: opts.graceMs ?? 15_000,
  });
  const events: TrainerEvent[] = [];
  const logs: TrainerLogLine[] = [];
  const invalid: InvalidEventLine[] = [];
  trainer.on('event', (e) => events.push(e));
  trainer.on('log', (l) => logs.push(l));
  trainer.on('invalid', (i) => invalid.push(i));
  return { trainer, events, logs, invalid, dir };
}

describe.concurrent('TrainerProcess with the real trainer', () => {
  it('completes: events in order, every one valid, typed completed outcome', async () => {
    const { trainer, events, invalid } = setup('complete');
    trainer.start();
    const completed = await trainer.completed();
    const outcome = await trainer.result;
    expect(outcome.kind).toBe('completed');
    expect(outcome.exitCode).toBe(0);
    expect(outcome.signal).toBeNull();
    expect(completed.epochs).toBe(2);
    expect(invalid).toEqual([]);
    for (const e of events) expect(validateTrainerEvent(e)).toEqual({ ok: true, value: e });
    const types = events.map((e) => e.type);
    expect(types[0]).toBe('started');
    expect(types.at(-1)).toBe('completed');
    expect(types.filter((t) => t === 'epoch')).toHaveLength(2);
    expect(events.filter((e) => e.type === 'epoch').map((e) => (e as { epoch: number }).epoch)).toEqual([1, 2]);
    expect(types).toContain('checkpoint');
    expect(types).toContain('artifact');
    expect(events.every((e) => e.session === 'complete')).toBe(true);
  });

  it('stop() mid-run: SIGTERM -> stop checkpoint -> stopped outcome, exit 0', async () => {
    const { trainer, events, dir } = setup('stop', { epochs: 200 });
    trainer.on('event', (e) => {
      if (e.type === 'epoch' && e.epoch === 1) void trainer.stop('cancel');
    });
    trainer.start();
    const outcome = await trainer.result;
    expect(outcome.kind).toBe('stopped');
    if (outcome.kind !== 'stopped') return;
    expect(outcome.exitCode).toBe(0);
    expect(outcome.killed).toBe(false);
    expect(outcome.stopRequested).toBe('cancel');
    expect(outcome.stopped.resumable).toBe(true);
    expect(outcome.stopped.epoch).toBeGreaterThanOrEqual(1);
    // The checkpoint at the stop position: a `stop` one, or the epoch's `last` when the stop
    // came right at an epoch boundary that was already saved.
    const { epoch, step } = outcome.stopped;
    const atStop = events.find((e) => e.type === 'checkpoint' && e.epoch === epoch && e.step === step && e.kind !== 'best');
    expect(atStop).toBeDefined();
    expect(outcome.stopped.checkpoint).toBe(path.join(dir, 'checkpoints', 'last.pt'));
    expect(existsSync(outcome.stopped.checkpoint)).toBe(true);
    expect(events.at(-1)?.type).toBe('stopped');
    await expect(trainer.completed()).rejects.toBeInstanceOf(TrainerStoppedError);
  });

  it('a bad architecture fails with exit 2: failed outcome carrying the failed event', async () => {
    const { trainer } = setup('bad-arch', { architecture: 'no_such_net' });
    trainer.start();
    const outcome = await trainer.result;
    expect(outcome.kind).toBe('failed');
    if (outcome.kind !== 'failed') return;
    expect(outcome.exitCode).toBe(2);
    expect(outcome.failed.exit_code).toBe(2);
    expect(outcome.failed.error_type).toBe('ConfigError');
    expect(outcome.failed.message).toMatch(/architecture/);
    expect(outcome.stderrTail).toMatch(/architecture/);
    await expect(trainer.completed()).rejects.toBeInstanceOf(TrainerFailedError);
  });

  it('kill -9 mid-run: crashed with the signal, the stderr tail and the last event', async () => {
    const { trainer } = setup('kill9', { epochs: 200 });
    trainer.on('event', (e) => {
      if (e.type === 'epoch') process.kill(trainer.pid!, 'SIGKILL');
    });
    trainer.start();
    const outcome = await trainer.result;
    expect(outcome.kind).toBe('crashed');
    expect(outcome.signal).toBe('SIGKILL');
    expect(outcome.exitCode).toBeNull();
    expect(outcome.lastEvent?.type).toBe('epoch');
    expect(typeof outcome.stderrTail).toBe('string');
    await expect(trainer.completed()).rejects.toBeInstanceOf(TrainerCrashedError);
  });

  it('over the time limit: SIGTERM, the trainer checkpoints, timed_out outcome', async () => {
    const { trainer, events } = setup('timeout', { epochs: 200 }, { timeoutMs: 3000 });
    trainer.start();
    const outcome = await trainer.result;
    expect(outcome.kind).toBe('timed_out');
    if (outcome.kind !== 'timed_out') return;
    expect(outcome.afterSeconds).toBeGreaterThanOrEqual(3);
    expect(outcome.stopRequested).toBe('timeout');
    // A SIGTERM during start-up is honoured at the first step boundary, with a checkpoint.
    expect(outcome.stopped?.resumable).toBe(true);
    expect(outcome.exitCode).toBe(0);
    // The checkpoint `stopped` names was written at the stop position: a `stop` checkpoint, or,
    // when the signal came after an epoch's end had already saved `last` there (a slow start-up
    // lets the first epochs finish within the limit), that one.
    type Of<T extends TrainerEvent['type']> = Extract<TrainerEvent, { type: T }>;
    const stopped = events.find((e): e is Of<'stopped'> => e.type === 'stopped')!;
    const written = events.filter((e): e is Of<'checkpoint'> => e.type === 'checkpoint' && e.path === stopped.checkpoint);
    expect(written.length).toBeGreaterThan(0);
    expect(written.at(-1)).toMatchObject({ epoch: stopped.epoch, step: stopped.step });
    expect(['stop', 'last']).toContain(written.at(-1)!.kind);
  });
});

describe('TrainerProcess without the real trainer', () => {
  it('an invalid event line is reported and skipped; a process that ignores SIGTERM is killed after the grace period', async () => {
    const dir = tempDir('fake');
    const fake = path.join(dir, 'python');
    // Stands in for `python -m cvtrain train ...`: junk and one valid event on fd 3, ignores SIGTERM.
    writeFileSync(
      fake,
      `#!/bin/bash
trap '' TERM
echo 'not json' >&3
echo '{"v":1,"type":"warning","ts":"2025-01-01T00:00:00.000Z","session":"s"}' >&3
echo '{"v":1,"type":"warning","ts":"2025-01-01T00:00:00.000Z","session":"s","code":"x","message":"m","count":1}' >&3
echo "to stdout"
echo "to stderr" >&2
sleep 30 & wait
`,
    );
    chmodSync(fake, 0o755);
    const { trainer, events, invalid, logs } = setup('fake', {}, { python: fake, graceMs: 300 });
    trainer.start();
    const t0 = Date.now();
    setTimeout(() => void trainer.stop('shutdown'), 300);
    const outcome = await trainer.result;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(outcome.kind).toBe('lost');
    expect(outcome.killed).toBe(true);
    expect(outcome.signal).toBe('SIGKILL');
    expect(invalid.map((i) => i.line)).toEqual(['not json', expect.stringContaining('"warning"')]);
    expect(invalid[1].error).toMatch(/required|must/);
    expect(events.map((e) => e.type)).toEqual(['warning']);
    expect(logs.map((l) => `${l.stream}:${l.line}`)).toEqual(expect.arrayContaining(['stdout:to stdout', 'stderr:to stderr']));
    expect(outcome.stderrTail).toBe('to stderr');
  });

  it('an interpreter that does not exist: crashed, with the reason in the stderr tail', async () => {
    const { trainer } = setup('missing', {}, { python: '/nonexistent/python3' });
    trainer.start();
    const outcome = await trainer.result;
    expect(outcome.kind).toBe('crashed');
    if (outcome.kind !== 'crashed') return;
    expect(outcome.spawnError).toMatch(/ENOENT/);
    expect(outcome.stderrTail).toMatch(/could not start \/nonexistent\/python3/);
  });
});
