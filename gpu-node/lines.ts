// Line splitting and bounded tails for child-process output.
import { StringDecoder } from 'node:string_decoder';

/**
 * Feeds chunks, calls `onLine` per complete line (without "\n" or a trailing "\r"). A line longer
 * than `maxBytes` is delivered cut, flagged `truncated`, so a runaway print cannot grow memory.
 */
export class LineSplitter {
  private decoder = new StringDecoder('utf8');
  private partial = '';
  private dropping = false;

  constructor(
    private readonly onLine: (line: string, truncated: boolean) => void,
    private readonly maxBytes: number,
  ) {}

  push(chunk: Buffer): void {
    let text = this.partial + this.decoder.write(chunk);
    let nl: number;
    while ((nl = text.indexOf('\n')) !== -1) {
      const line = text.slice(0, nl);
      text = text.slice(nl + 1);
      if (this.dropping) {
        this.dropping = false; // the rest of an over-long line already delivered
        continue;
      }
      this.onLine(stripCr(line), false);
    }
    if (!this.dropping && text.length > this.maxBytes) {
      this.onLine(text.slice(0, this.maxBytes), true);
      this.dropping = true;
      text = '';
    } else if (this.dropping) {
      text = '';
    }
    this.partial = text;
  }

  /** The stream ended: a last line without "\n" still counts. */
  end(): void {
    const rest = this.partial + this.decoder.end();
    this.partial = '';
    if (rest.length > 0 && !this.dropping) this.onLine(stripCr(rest), false);
    this.dropping = false;
  }
}

function stripCr(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}

/** The last lines of a stream, bounded in both lines and bytes (whichever bites first). */
export class TailBuffer {
  private lines: string[] = [];
  private bytes = 0;

  constructor(
    private readonly maxLines: number,
    private readonly maxBytes: number,
  ) {}

  push(line: string): void {
    const cut = line.length > this.maxBytes ? line.slice(line.length - this.maxBytes) : line;
    this.lines.push(cut);
    this.bytes += Buffer.byteLength(cut) + 1;
    while (this.lines.length > this.maxLines || (this.bytes > this.maxBytes && this.lines.length > 1)) {
      const dropped = this.lines.shift()!;
      this.bytes -= Buffer.byteLength(dropped) + 1;
    }
  }

  text(): string {
    return this.lines.join('\n');
  }
}
