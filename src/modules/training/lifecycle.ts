// The one place session statuses change. Everything else asks `assertTransition`/`applyTransition`,
// so an impossible move (COMPLETED -> RUNNING) fails loudly instead of corrupting a session.
import { ConflictError } from '../../lib/errors.js';
import type { ITrainingSession, SessionStatus } from './entity.js';

const allowed: Record<SessionStatus, readonly SessionStatus[]> = {
  PENDING: ['QUEUED', 'FAILED', 'CANCELLED'],
  QUEUED: ['RUNNING', 'FAILED', 'CANCELLED', 'PENDING'],
  RUNNING: ['COMPLETED', 'FAILED', 'CANCELLED', 'PREEMPTED', 'PAUSED_BUDGET', 'QUEUED'],
  PREEMPTED: ['QUEUED', 'FAILED', 'CANCELLED'],
  PAUSED_BUDGET: ['QUEUED', 'CANCELLED'],
  COMPLETED: [],
  FAILED: [],
  CANCELLED: [],
};

export const TERMINAL_STATUSES: readonly SessionStatus[] = ['COMPLETED', 'FAILED', 'CANCELLED'];
export const ACTIVE_STATUSES: readonly SessionStatus[] = ['PENDING', 'QUEUED', 'RUNNING', 'PREEMPTED', 'PAUSED_BUDGET'];

export function canTransition(from: SessionStatus, to: SessionStatus): boolean {
  return allowed[from].includes(to);
}

export function assertTransition(from: SessionStatus, to: SessionStatus): void {
  if (!canTransition(from, to)) {
    throw new ConflictError(`A ${from} training session cannot become ${to}`);
  }
}

/** Moves an entity to a new status and stamps the matching timestamp. The caller flushes. */
export function applyTransition(session: ITrainingSession, to: SessionStatus, at = new Date()): void {
  assertTransition(session.status, to);
  session.status = to;
  if (to === 'QUEUED') session.queuedAt = at;
  if (to === 'RUNNING' && !session.startedAt) session.startedAt = at;
  if (TERMINAL_STATUSES.includes(to)) session.finishedAt = at;
}
