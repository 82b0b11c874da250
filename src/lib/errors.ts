// Expected failures. Services throw these; the GraphQL layer turns them into typed results.
export class AppError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad input; `field` is the input path, e.g. "input.config.epochs". */
export class ValidationError extends AppError {
  constructor(public readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
  /** The message without the field prefix (clients get the field separately). */
  get reason(): string {
    return this.message.slice(this.field.length + 2);
  }
}

export class NotFoundError extends AppError {
  constructor(public readonly resource: string, public readonly id: string) {
    // The message names no id: resolvers hand services row ids, while clients know global IDs.
    super(`No ${resource} with this ID exists in your organization`);
  }
}

/** Signed in, but the role does not allow the operation. */
export class ForbiddenError extends AppError {
  constructor(message: string) {
    super(message);
  }
}

/** No valid credentials, or wrong ones at sign-in. */
export class AuthenticationError extends AppError {
  constructor(message = 'Sign in first: send "Authorization: Bearer <token or API key>"') {
    super(message);
  }
}

export class LimitExceededError extends AppError {
  constructor(
    public readonly limit: string,
    public readonly maximum: number | null,
    message: string,
    /** Set when the limit is a rate: how long until a retry can succeed. */
    public readonly retryAfterSeconds: number | null = null,
  ) {
    super(message);
  }
}

/** The request conflicts with stored state (a duplicate name, a state transition not allowed). */
export class ConflictError extends AppError {
  constructor(message: string) {
    super(message);
  }
}
