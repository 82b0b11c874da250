// End to end (issue 5): cancelling a queued session is immediate; cancelling a running one reaches
// the trainer (SIGTERM, checkpoint, stop) and the session is CANCELLED within 15 s; a trainer that
// dies or fails makes the session FAILED with the message, exit code and stderr tail.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  cancelSession,
  getSession,
  isAlive,
  killGroup,
  makeDatasetArchive,
  PYTHON,
  SESSION_SUBSCRIPTION,
  sessionUuid,
  streamEvents,
  tempDir,
  tinyTraining,
  trainerPidsForSession,
  trainModel,
  uploadDatasetVersion,
  waitFor,
  waitForStatus,
} from './helpers/e2e.js';
import { useE2eFixture } from './helpers/e2e-fixture.js';

// Re-encodes every image of the folder as PNG and flips one byte inside its IDAT chunk.
const DAMAGE_PNGS = `
import io, os, sys
from PIL import Image
for dirpath, _, files in os.walk(sys.argv[1]):
    for f in files:
        src = os.path.join(dirpath, f)
        buf = io.BytesIO()
        Image.open(src).convert('RGB').save(buf, format='PNG')
        data = bytearray(buf.getvalue())
        data[data.index(b'IDAT') + 10] ^= 0xFF
        os.remove(src)
        with open(os.path.splitext(src)[0] + '.png', 'wb') as out:
            out.write(data)
`;

const e2e = useE2eFixture({ name: 'cancel', node: { id: 'e2e-cancel-node' } });

/** Waits for a running trainer of the session and returns its pid; killed at the end whatever happens. */
async function trainerOf(sessionId: string): Promise<number> {
  const uuid = sessionUuid(sessionId);
  const [pid] = await waitFor(() => {
    const pids = trainerPidsForSession(uuid);
    return pids.length === 1 ? pids : null;
  }, 30_000, 'the trainer process');
  e2e.cleanup.add(`trainer ${pid}`, () => killGroup(pid));
  return pid;
}

describe.sequential('e2e: cancellation and trainer failures', () => {
  it('cancelling a QUEUED session (no node running) is immediate, and no node runs it later', async () => {
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs: 3 }));
    expect(session.status).toBe('QUEUED');
    const t0 = Date.now();
    const cancelled = await cancelSession(e2e.api, e2e.org.token, session.id);
    const ms = Date.now() - t0;
    expect(cancelled.status).toBe('CANCELLED');
    expect(ms).toBeLessThan(2000);
    expect((await getSession(e2e.api, e2e.org.token, session.id)).status).toBe('CANCELLED');

    // A node that starts now finds nothing to run for it (the queued job is gone or refused).
    await e2e.ensureNode();
    const control = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs: 1 }));
    await waitForStatus(e2e.api, e2e.org.token, control.id, ['COMPLETED'], 60_000);
    const after = await getSession(e2e.api, e2e.org.token, session.id);
    expect(after).toMatchObject({ status: 'CANCELLED', startedAt: null, epochs: { edges: [] } });
    expect(trainerPidsForSession(sessionUuid(session.id))).toEqual([]);
  }, 90_000);

  it('cancelling a RUNNING session: the trainer gets SIGTERM, checkpoints and stops; CANCELLED within 15 s', async () => {
    await e2e.ensureNode();
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs: 200 }));
    const ws = e2e.client(e2e.org.token);
    const updates = ws.subscribe<{ status: string }>(SESSION_SUBSCRIPTION, { s: session.id }, 'trainingSessionUpdated');
    await waitFor(async () => (await getSession(e2e.api, e2e.org.token, session.id)).epochs.edges.length >= 1, 60_000, 'a first epoch');
    const pid = await trainerOf(session.id);

    const t0 = Date.now();
    const requested = await cancelSession(e2e.api, e2e.org.token, session.id);
    // A running session stays RUNNING until its trainer has stopped, and says a cancel is pending.
    expect(requested).toEqual({ status: 'RUNNING', cancelRequested: true });
    const done = await waitForStatus(e2e.api, e2e.org.token, session.id, ['CANCELLED'], 30_000);
    const seconds = (Date.now() - t0) / 1000;
    console.log(`cancel of a RUNNING session: CANCELLED after ${seconds.toFixed(1)} s`);
    expect(seconds).toBeLessThan(15);
    expect(done.error).toBeNull();
    expect(done.epochs.edges.length).toBeLessThan(200);
    await waitFor(() => !isAlive(pid), 5000, 'the trainer process to exit');
    await updates.waitForEnd(10_000);
    expect(updates.items.at(-1)).toMatchObject({ status: 'CANCELLED' });

    // What the API does not show, from the node's event stream: the trainer stopped on SIGTERM
    // (not killed after the grace period) and the checkpoint it wrote at the stop was uploaded.
    const events = await streamEvents(e2e.api.app.config.redisUrl, e2e.api.app.config.redisPrefix, sessionUuid(session.id));
    const stopped = events.find((e) => e.event.type === 'stopped');
    expect(stopped?.event).toMatchObject({ reason: 'signal:SIGTERM', resumable: true });
    const atStop = events.filter(
      (e) => e.event.type === 'checkpoint' && e.event.epoch === stopped!.event.epoch && e.event.step === stopped!.event.step && e.upload,
    );
    expect(atStop.length).toBeGreaterThan(0);
    expect(events.some((e) => e.source === 'node' && e.event.type === 'crashed')).toBe(false);
  }, 90_000);

  it('a trainer killed with SIGKILL makes the session FAILED with what the node saw', async () => {
    await e2e.ensureNode();
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs: 200 }));
    await waitFor(async () => (await getSession(e2e.api, e2e.org.token, session.id)).epochs.edges.length >= 1, 60_000, 'a first epoch');
    const pid = await trainerOf(session.id);
    process.kill(pid, 'SIGKILL');

    const failed = await waitForStatus(e2e.api, e2e.org.token, session.id, ['FAILED'], 30_000);
    console.log(`trainer SIGKILLed: ${JSON.stringify(failed.error)}`);
    expect(failed.error).not.toBeNull();
    expect(failed.error!.message).toMatch(/SIGKILL/);
    expect(failed.error!.message).toMatch(/last event (epoch|checkpoint|progress)/);
    // Killed by a signal: no exit code, and the stderr tail is recorded (a clean CPU run prints little).
    expect(failed.error!.exitCode).toBeNull();
    expect(typeof failed.error!.stderrTail).toBe('string');
    expect(failed.epochs.edges.length).toBeGreaterThanOrEqual(1);
  }, 90_000);

  it('a trainer that fails on its data: FAILED with its message, exit code and stderr tail', async () => {
    await e2e.ensureNode();
    // PNGs that are complete but whose compressed pixel data is damaged: the API's finalize
    // checks structure, not pixels (src/modules/datasets/validation/images.ts says so), so the
    // version is READY; the trainer starts, cannot decode them, and fails with its dataset exit code (3).
    const dir = tempDir(e2e.cleanup, 'broken');
    const archive = makeDatasetArchive(dir, {
      images: 24,
      size: 32,
      seed: 3,
      mutate: (rootDir) => {
        execFileSync(PYTHON, ['-c', DAMAGE_PNGS, rootDir], { stdio: 'pipe' });
      },
    });
    const version = await uploadDatasetVersion(e2e.api, e2e.org.token, e2e.org.datasetId, archive, 'IMAGE_FOLDER');
    expect(version.status).toBe('READY');
    const session = await trainModel(e2e.api, { ...e2e.org, datasetVersionId: version.id }, tinyTraining({ epochs: 3 }));
    const failed = await waitForStatus(e2e.api, e2e.org.token, session.id, ['FAILED'], 60_000);
    console.log(`trainer failed on its data: ${JSON.stringify({ ...failed.error, stderrTail: failed.error?.stderrTail?.slice(-300) })}`);
    expect(failed.error).toMatchObject({ message: expect.stringMatching(/do not decode|corrupt|decode/i), exitCode: 3 });
    expect(failed.error!.stderrTail).toMatch(/DatasetError/);
    expect(failed.epochs.edges).toEqual([]);
    // It got as far as starting: the node claimed it and the trainer ran.
    expect(failed.startedAt).not.toBeNull();
  }, 90_000);
});
