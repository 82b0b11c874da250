// Compute and storage profiles share one rule: at most one default per organization (a partial
// unique index enforces it) and unique names. This saves such a profile under those rules.
import { UniqueConstraintViolationException, type EntityName } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import { ConflictError } from '../lib/errors.js';

interface DefaultableProfile {
  id: string;
  isDefault: boolean;
}

/**
 * Persists `profile`, making it the organization's default (`isDefault` true), not the default
 * (false) or leaving that as it is (null). A name clash becomes a ConflictError.
 */
export async function saveWithSingleDefault<T extends DefaultableProfile>(
  em: EntityManager,
  entity: EntityName<T>,
  profile: T,
  opts: { orgId: string; table: string; isDefault: boolean | null; nameTaken: string },
): Promise<void> {
  try {
    await em.transactional(async (tx) => {
      // One writer per organization at a time: two requests both making "their" profile the
      // default would otherwise race on the one-default index, and the loser would be told its
      // name is taken.
      await tx
        .getConnection()
        .execute('select pg_advisory_xact_lock(hashtext(?))', [`${opts.table}:${opts.orgId}`], 'all', tx.getTransactionContext());
      if (opts.isDefault === true && !profile.isDefault) {
        // Clear the old default first: the partial unique index allows one default per organization.
        await tx.nativeUpdate(entity, { isDefault: true, id: { $ne: profile.id } } as never, { isDefault: false } as never);
        profile.isDefault = true;
      } else if (opts.isDefault === false) {
        profile.isDefault = false;
      }
      tx.persist(profile);
      await tx.flush();
    });
  } catch (err) {
    if (err instanceof UniqueConstraintViolationException) {
      // The failed entity would be flushed again by a later mutation in the same request.
      em.clear();
      throw new ConflictError(opts.nameTaken);
    }
    throw err;
  }
}
