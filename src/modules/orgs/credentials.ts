// Passwords, session tokens and API key secrets. Nothing here touches the database.
import { createHash, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { limits } from '../../config.js';

function scryptAsync(password: string, salt: Buffer, keyLen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, keyLen, opts, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** "scrypt$N$r$p$salt$hash": parameters travel with the hash so they can be raised later. */
export async function hashPassword(password: string): Promise<string> {
  const { N, r, p, keyLen, maxmem } = limits.scrypt;
  const salt = randomBytes(16);
  const key = await scryptAsync(password.normalize('NFKC'), salt, keyLen, { N, r, p, maxmem });
  return ['scrypt', N, r, p, salt.toString('base64'), key.toString('base64')].join('$');
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, saltB64, keyB64] = parts;
  const expected = Buffer.from(keyB64, 'base64');
  const key = await scryptAsync(password.normalize('NFKC'), Buffer.from(saltB64, 'base64'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: limits.scrypt.maxmem,
  });
  return timingSafeEqual(key, expected);
}

// A fixed hash to verify against when the email is unknown, so both cases take the same time.
let dummyHash: Promise<string> | null = null;
export function timingDummyHash(): Promise<string> {
  dummyHash ??= hashPassword(randomBytes(16).toString('hex'));
  return dummyHash;
}

export interface SessionClaims {
  userId: string;
  orgId: string;
}

export async function signSessionToken(claims: SessionClaims, secret: Uint8Array, ttlSeconds: number) {
  const expiresAt = new Date(Date.now() + ttlSeconds * 1000);
  const token = await new SignJWT({ org: claims.orgId })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.userId)
    .setIssuer('cvtrain')
    .setAudience('cvtrain-api')
    .setIssuedAt()
    .setExpirationTime(Math.floor(expiresAt.getTime() / 1000))
    .sign(secret);
  return { token, expiresAt };
}

// Verifying an HS256 token costs a WebCrypto key import and HMAC per request; a token that
// verified once verifies again until it expires, so valid tokens are remembered (per secret).
const VERIFIED_CACHE_MAX = 10_000;
const verifiedCache = new WeakMap<Uint8Array, Map<string, { claims: SessionClaims; expMs: number }>>();

/** Returns null for any invalid, expired or foreign token: callers treat all of them alike. */
export async function verifySessionToken(token: string, secret: Uint8Array): Promise<SessionClaims | null> {
  let cache = verifiedCache.get(secret);
  if (!cache) verifiedCache.set(secret, (cache = new Map()));
  const hit = cache.get(token);
  if (hit) {
    if (hit.expMs > Date.now()) return hit.claims;
    cache.delete(token);
  }
  const claims = await verifyUncached(token, secret);
  if (claims) {
    if (cache.size >= VERIFIED_CACHE_MAX) cache.delete(cache.keys().next().value!);
    cache.set(token, claims);
  }
  return claims?.claims ?? null;
}

async function verifyUncached(
  token: string,
  secret: Uint8Array,
): Promise<{ claims: SessionClaims; expMs: number } | null> {
  try {
    const { payload } = await jwtVerify(token, secret, {
      algorithms: ['HS256'],
      issuer: 'cvtrain',
      audience: 'cvtrain-api',
    });
    if (typeof payload.sub !== 'string' || typeof payload.org !== 'string' || typeof payload.exp !== 'number') {
      return null;
    }
    return { claims: { userId: payload.sub, orgId: payload.org }, expMs: payload.exp * 1000 };
  } catch (err) {
    if (err instanceof joseErrors.JOSEError) return null;
    throw err;
  }
}

// API keys look like "cvt_<32 hex key id>_<43 char secret>": the id finds the row, the secret is
// compared by hash, and the prefix lets secret scanners recognise leaked keys.
const API_KEY_RE = /^cvt_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$/;

export function newApiKeySecret(keyId: string): { token: string; secretHash: string; hint: string } {
  const secret = randomBytes(32).toString('base64url');
  const token = `cvt_${keyId.replace(/-/g, '')}_${secret}`;
  return { token, secretHash: sha256Hex(secret), hint: `${token.slice(0, 12)}…` };
}

export function parseApiKey(token: string): { keyId: string; secret: string } | null {
  const m = API_KEY_RE.exec(token);
  if (!m) return null;
  const hex = m[1];
  const keyId = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  return { keyId, secret: m[2] };
}

export function apiKeySecretMatches(secret: string, storedHash: string): boolean {
  const a = Buffer.from(sha256Hex(secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

export function sha256Hex(value: string | Buffer): string {
  return createHash('sha256').update(value).digest('hex');
}
