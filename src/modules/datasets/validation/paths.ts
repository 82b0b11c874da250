// Entry names: what may be extracted, and under which relative path.
import { MAX_ENTRY_NAME_BYTES } from './limits.js';

export type NameCheck = { ok: true; path: string } | { ok: false; reason: string };

/**
 * The relative path an entry would be extracted to, or why it is refused. Nothing is
 * rewritten into something "safe": an archive that tries to climb out is refused, since
 * silently relocating entries would make the validated tree differ from the extracted one.
 */
export function checkEntryName(raw: string): NameCheck {
  if (raw.length === 0) return { ok: false, reason: 'empty entry name' };
  if (Buffer.byteLength(raw) > MAX_ENTRY_NAME_BYTES) return { ok: false, reason: `entry name longer than ${MAX_ENTRY_NAME_BYTES} bytes` };
  if (raw.includes('\0')) return { ok: false, reason: 'NUL byte in the entry name' };
  // Windows extractors treat "\" as a separator, so "..\\x" climbs out there even though it is one name on Linux.
  if (raw.includes('\\')) return { ok: false, reason: 'backslash in the entry name (a path separator on Windows)' };
  if (raw.startsWith('/')) return { ok: false, reason: 'absolute path' };
  if (/^[A-Za-z]:/.test(raw)) return { ok: false, reason: 'drive letter in the entry name' };
  const parts: string[] = [];
  for (const seg of raw.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') return { ok: false, reason: '".." climbs out of the extraction folder' };
    parts.push(seg);
  }
  return { ok: true, path: parts.join('/') };
}

/**
 * OS clutter that archivers add (macOS resource forks and Finder state, Windows thumbnails).
 * The validator leaves these out of the dataset and the gpu-node extractor must skip them too:
 * a "._img.jpg" AppleDouble file next to img.jpg is not a JPEG, and "__MACOSX" would look like a split.
 */
export function isIgnoredEntry(path: string): boolean {
  const parts = path.split('/');
  if (parts.includes('__MACOSX')) return true;
  const base = parts[parts.length - 1];
  return base === '.DS_Store' || base === 'Thumbs.db' || base === 'desktop.ini' || base.startsWith('._');
}

/**
 * A name fit for a problem's `path` or message: control characters (C0, DEL and C1) would garble
 * logs and UIs, and NUL cannot be stored in PostgreSQL at all.
 */
export function printableName(raw: string): string {
  return raw.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

// Code page 437, the zip default when the UTF-8 flag is off (what Python's zipfile decodes with).
const CP437_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

export function decodeCp437(buf: Buffer): string {
  let ascii = true;
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return buf.toString('latin1');
  let out = '';
  for (let i = 0; i < buf.length; i++) out += buf[i] < 0x80 ? String.fromCharCode(buf[i]) : CP437_HIGH[buf[i] - 0x80];
  return out;
}
