import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT } from 'jose';
import { signUp, startTestApi, type TestApi } from './helpers/api.js';

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi({ env: { CVTRAIN_JWT_TTL_S: '60' } });
});
afterAll(() => api?.close());

const SIGN_UP = `mutation($input: SignUpInput!) { signUp(input: $input) {
  __typename
  ... on SignUpSuccess { authPayload { token expiresAt role user { id email } organization { id name } } }
  ... on ValidationError { field message }
  ... on Error { message } } }`;
const SIGN_IN = `mutation($input: SignInInput!) { signIn(input: $input) {
  __typename
  ... on SignInSuccess { authPayload { token role organization { id } } }
  ... on ValidationError { field message }
  ... on Error { message } } }`;
const VIEWER = '{ viewer { role user { email } organization { name } apiKey { id } } }';

describe('sign up and sign in', () => {
  it('signs up an OWNER of a new organization and returns a working token', async () => {
    const res = await api.gql(SIGN_UP, {
      input: { email: '  Ada@Example.COM ', password: 'correct horse battery', organizationName: 'Analytical' },
    });
    const payload = res.data.signUp.authPayload;
    expect(res.data.signUp.__typename).toBe('SignUpSuccess');
    expect(payload.role).toBe('OWNER');
    expect(payload.user.email).toBe('ada@example.com');
    expect(payload.organization.name).toBe('Analytical');
    const expiresIn = new Date(payload.expiresAt).getTime() - Date.now();
    expect(expiresIn).toBeGreaterThan(50_000);
    expect(expiresIn).toBeLessThanOrEqual(60_000);

    const viewer = await api.gql(VIEWER, {}, payload.token);
    expect(viewer.data.viewer).toEqual({
      role: 'OWNER',
      user: { email: 'ada@example.com' },
      organization: { name: 'Analytical' },
      apiKey: null,
    });
  });

  it('refuses a second account with the same email, naming the field', async () => {
    const input = { email: 'twice@example.com', password: 'correct horse battery', organizationName: 'One' };
    expect((await api.gql(SIGN_UP, { input })).data.signUp.__typename).toBe('SignUpSuccess');
    const again = await api.gql(SIGN_UP, { input: { ...input, email: 'TWICE@example.com', organizationName: 'Two' } });
    expect(again.data.signUp).toMatchObject({ __typename: 'ValidationError', field: 'input.email' });
    const orgs = await api.orm.em.getConnection().execute(`select name from organizations where name = 'Two'`);
    expect(orgs).toHaveLength(0);
  });

  it.each([
    [{ email: 'not-an-email', password: 'correct horse battery', organizationName: 'X' }, 'input.email'],
    [{ email: 'short@example.com', password: 'short', organizationName: 'X' }, 'input.password'],
    [{ email: 'blank@example.com', password: 'correct horse battery', organizationName: '   ' }, 'input.organizationName'],
  ])('validates %j', async (input, field) => {
    const res = await api.gql(SIGN_UP, { input });
    expect(res.data.signUp.__typename).toBe('ValidationError');
    expect(res.data.signUp.field).toBe(field);
    expect(res.data.signUp.message).toContain(field);
  });

  it('signs in with the right password only, with the same answer for unknown emails', async () => {
    const user = await signUp(api, 'SignIn Org');
    const good = await api.gql(SIGN_IN, { input: { email: user.email.toUpperCase(), password: user.password } });
    expect(good.data.signIn.__typename).toBe('SignInSuccess');
    expect(good.data.signIn.authPayload.organization.id).toBe(user.orgId);

    const wrong = await api.gql(SIGN_IN, { input: { email: user.email, password: 'wrong password!!' } });
    const unknown = await api.gql(SIGN_IN, { input: { email: 'nobody@example.com', password: 'wrong password!!' } });
    expect(wrong.data.signIn).toEqual({ __typename: 'AuthenticationError', message: 'Wrong email or password' });
    expect(unknown.data.signIn).toEqual(wrong.data.signIn);
  });

  it('treats missing, malformed, tampered, expired and foreign tokens as anonymous', async () => {
    const user = await signUp(api, 'Tokens');
    expect((await api.gql(VIEWER, {}, null)).data.viewer).toBeNull();
    expect((await api.gql(VIEWER, {}, 'garbage')).data.viewer).toBeNull();
    const tampered = user.token.slice(0, -2) + (user.token.endsWith('AA') ? 'BB' : 'AA');
    expect((await api.gql(VIEWER, {}, tampered)).data.viewer).toBeNull();

    const expired = await new SignJWT({ org: user.orgId })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(user.userId)
      .setIssuer('cvtrain')
      .setAudience('cvtrain-api')
      .setIssuedAt(Math.floor(Date.now() / 1000) - 120)
      .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
      .sign(api.app.config.jwtSecret);
    expect((await api.gql(VIEWER, {}, expired)).data.viewer).toBeNull();

    const foreign = await new SignJWT({ org: user.orgId })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(user.userId)
      .setIssuer('cvtrain')
      .setAudience('cvtrain-api')
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('another-secret-that-is-long-enough-to-sign'));
    expect((await api.gql(VIEWER, {}, foreign)).data.viewer).toBeNull();

    // A query that needs a caller says so with a typed error code.
    const models = await api.gql('{ models { totalCount } }', {}, expired);
    expect(models.errors?.[0].message).toMatch(/Sign in first/);
    expect(models.errors?.[0].extensions?.code).toBe('UNAUTHENTICATED');
  });

  it('stores passwords as scrypt hashes only', async () => {
    const user = await signUp(api, 'Hashes');
    const [row] = await api.orm.em
      .getConnection()
      .execute<{ password_hash: string }[]>('select password_hash from users where email = ?', [user.email]);
    expect(row.password_hash).toMatch(/^scrypt\$32768\$8\$1\$/);
    expect(row.password_hash).not.toContain(user.password);
  });
});
