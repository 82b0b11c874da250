import {
  AuthenticationError,
  ConflictError,
  ForbiddenError,
  LimitExceededError,
  NotFoundError,
  ValidationError,
} from '../lib/errors.js';
import { builder } from './builder.js';
import { globalId, isUuid } from './ids.js';

export const ErrorInterface = builder.interfaceRef<Error>('Error').implement({
  description: 'Every expected failure implements this; `message` is written for humans.',
  fields: (t) => ({ message: t.exposeString('message') }),
});

builder.objectType(ValidationError, {
  name: 'ValidationError',
  description: 'An input value was rejected. `field` is its path, e.g. "input.config.epochs".',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    field: t.exposeString('field'),
  }),
});

builder.objectType(NotFoundError, {
  name: 'NotFoundError',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    resource: t.exposeString('resource'),
    // Services know row ids; clients sent a global ID, so hand that back.
    id: t.string({ resolve: (e) => (isUuid(e.id) ? globalId(e.resource, e.id) : e.id) }),
  }),
});

builder.objectType(ForbiddenError, {
  name: 'ForbiddenError',
  description: 'The caller is signed in but their role does not allow this.',
  interfaces: [ErrorInterface],
  fields: () => ({}),
});

builder.objectType(AuthenticationError, {
  name: 'AuthenticationError',
  description: 'Missing, expired or wrong credentials.',
  interfaces: [ErrorInterface],
  fields: () => ({}),
});

builder.objectType(LimitExceededError, {
  name: 'LimitExceededError',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    limit: t.exposeString('limit'),
    maximum: t.exposeFloat('maximum', { nullable: true }),
    retryAfterSeconds: t.exposeInt('retryAfterSeconds', {
      nullable: true,
      description: 'For rate limits: seconds until a retry can succeed (also sent as the Retry-After header).',
    }),
  }),
});

builder.objectType(ConflictError, {
  name: 'ConflictError',
  description: 'The request conflicts with stored state, such as a name already in use.',
  interfaces: [ErrorInterface],
  fields: () => ({}),
});

/** Error sets for mutations; every mutation can fail authentication and authorisation. */
export const E = {
  auth: [AuthenticationError, ForbiddenError],
  write: [AuthenticationError, ForbiddenError, ValidationError, ConflictError],
  writeById: [AuthenticationError, ForbiddenError, ValidationError, NotFoundError, ConflictError],
};
