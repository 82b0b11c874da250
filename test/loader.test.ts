// src/lib/loader.ts: primed values read back without a promise, everything else as DataLoader does.
import { describe, expect, it } from 'vitest';
import { Loader } from '../src/lib/loader.js';

function loader(options?: { cache?: boolean }) {
  const batches: string[][] = [];
  const l = new Loader<string, string | null>(async (keys) => {
    batches.push([...keys]);
    return keys.map((k) => `db:${k}`);
  }, options);
  return { l, batches };
}

describe('Loader', () => {
  it('returns primed values (null included) synchronously and keeps the first one, like DataLoader', async () => {
    const { l, batches } = loader();
    l.prime('a', 'A').prime('a', 'A2').prime('n', null);
    expect(l.get('a')).toBe('A');
    expect(l.get('n')).toBeNull();
    expect(await l.load('a')).toBe('A');
    expect(batches).toEqual([]);
  });

  it('loads what was not primed, and a prime after a load does not replace the loaded value', async () => {
    const { l, batches } = loader();
    const pending = l.get('b');
    expect(pending).toBeInstanceOf(Promise);
    expect(await pending).toBe('db:b');
    l.prime('b', 'B');
    expect(await l.get('b')).toBe('db:b');
    expect(batches).toEqual([['b']]);
  });

  it('forgets primed values on clear and clearAll', async () => {
    const { l } = loader();
    l.prime('a', 'A').prime('c', 'C');
    l.clear('a');
    expect(await l.get('a')).toBe('db:a');
    l.clearAll();
    expect(await l.get('c')).toBe('db:c');
  });

  it('primes nothing without a cache, like DataLoader', async () => {
    const { l } = loader({ cache: false });
    l.prime('x', 'X');
    expect(await l.get('x')).toBe('db:x');
  });
});
