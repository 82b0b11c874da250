// Encryption of stored secrets (compute-profile and storage credentials) with AES-256-GCM.
// The associated data binds a ciphertext to its row: a value copied into another organization's
// row, or another row of the same organization, fails to decrypt instead of leaking.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Keyring } from '../config.js';

const VERSION = 'v1';

export class SecretBox {
  constructor(private readonly keyring: Keyring) {
    if (keyring.length === 0) throw new Error('SecretBox needs at least one key');
  }

  /** The newest key encrypts. */
  encrypt(plaintext: string, associatedData: string): string {
    const { id, key } = this.keyring[0];
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(Buffer.from(`${VERSION}|${id}|${associatedData}`));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
    return [VERSION, id, iv.toString('base64url'), body.toString('base64url')].join('.');
  }

  decrypt(envelope: string, associatedData: string): string {
    const [version, keyId, ivB64, bodyB64] = envelope.split('.');
    if (version !== VERSION || !keyId || !ivB64 || !bodyB64) throw new Error('not a secret envelope');
    const entry = this.keyring.find((k) => k.id === keyId);
    if (!entry) throw new Error(`secret was encrypted with key "${keyId}", which is not in CVTRAIN_SECRET_KEYS`);
    const body = Buffer.from(bodyB64, 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', entry.key, Buffer.from(ivB64, 'base64url'));
    decipher.setAAD(Buffer.from(`${VERSION}|${keyId}|${associatedData}`));
    decipher.setAuthTag(body.subarray(body.length - 16));
    return Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]).toString('utf8');
  }

  /** Key id an envelope was sealed with, so rotation can find what still uses an old key. */
  static keyIdOf(envelope: string): string | null {
    return envelope.split('.')[1] ?? null;
  }
}
