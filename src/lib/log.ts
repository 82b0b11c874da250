// A small structured logger: one line per event, JSON in production, readable text otherwise.
// Nothing here logs request bodies or headers, and every line goes through redact() on its way
// out, so secrets, tokens and stored values never reach the log even inside an error message.
type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level | 'silent', number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

let threshold = order.info;
let json = false;

export function configureLogger(opts: { level: Level | 'silent'; json: boolean }): void {
  threshold = order[opts.level];
  json = opts.json;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

// Field names whose values are never logged, at any depth.
const SECRET_KEY = /credential|password|passwd|secret|token|ciphertext|authorization|cookie|api_?key|private_?key/i;
// What a secret looks like wherever it turns up: SecretBox envelopes (v1.<key id>.<iv>.<body>),
// JWTs, "Bearer ..." values and API keys (cvt_<id>_<secret>).
const SECRET_TEXT: [RegExp, string][] = [
  [/\bv\d+\.[\w-]{1,64}\.[\w-]{16}\.[\w-]{16,}/g, '[ciphertext]'],
  [/\beyJ[\w-]*\.[\w-]+\.[\w-]*/g, '[token]'],
  [/\b(Bearer|Basic)\s+[^\s"',;]+/gi, '$1 [redacted]'],
  [/\bcvt_[0-9a-f]{32}_[\w-]+/g, '[api key]'],
];
// A statement in an error message (MikroORM puts the SQL with its values inlined in front of the
// driver's message: "insert into ... values ('...', ...) - <reason>"). The statement's literals
// and numbers are replaced by ?, and so are the row values PostgreSQL quotes in its own reasons.
const SQL_START = /\b(insert\s+into|update\s+\S+\s+set|delete\s+from|select\s[\s\S]{0,4000}?\sfrom|with\s+\S+\s+as\s*\()\s/i;
const SQL_NUMBER = /(?<![\w$."])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w"])/gi;
const PG_ROW_VALUES: [RegExp, string][] = [
  [/(Failing row contains )\(.*\)/g, '$1(?)'],
  [/(Key \([^)]*\))=\(.*\)(?= already exists| is not present| conflicts)/g, '$1=(?)'],
];

/** The text with secrets, ciphertexts and SQL values taken out. */
export function redact(text: string): string {
  let out = '';
  let rest = text;
  for (let sql = SQL_START.exec(rest); sql; sql = SQL_START.exec(rest)) {
    const [statement, after] = redactStatement(rest.slice(sql.index));
    out += rest.slice(0, sql.index) + statement;
    rest = after;
  }
  out += rest;
  for (const [re, to] of PG_ROW_VALUES) out = out.replace(re, to);
  for (const [re, to] of SECRET_TEXT) out = out.replace(re, to);
  return out;
}

/**
 * Replaces the literals ('...', E'...') and numbers of the statement at the start of `text` by ?,
 * up to " - " outside a literal (where MikroORM appends the driver's reason) or the end.
 */
function redactStatement(text: string): [statement: string, rest: string] {
  let statement = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "'") {
      const escapes = (text[i - 1] === 'E' || text[i - 1] === 'e') && !/\w/.test(text[i - 2] ?? '');
      let j = i + 1;
      for (; j < text.length; j++) {
        if (escapes && text[j] === '\\') j++;
        else if (text[j] === "'") {
          if (text[j + 1] === "'") j++;
          else break;
        }
      }
      if (escapes) statement = statement.slice(0, -1);
      statement += '?';
      i = j + 1; // an unterminated literal swallows the rest
      continue;
    }
    if (c === ' ' && text.startsWith(' - ', i)) break;
    statement += c;
    i++;
  }
  return [statement.replace(SQL_NUMBER, '?'), text.slice(i)];
}

function redactValue(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redact(value);
  if (value === null || typeof value !== 'object' || depth > 8) return value;
  if (value instanceof Error) return redact(String(value.message));
  if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? '[redacted]' : redactValue(v, depth + 1);
  return out;
}

/** Log fields with every secret-named field replaced and every string redacted. */
export function redactFields(fields: Record<string, unknown>): Record<string, unknown> {
  return redactValue(fields) as Record<string, unknown>;
}

function write(level: Level, component: string, rawMsg: string, rawFields?: Record<string, unknown>) {
  if (order[level] < threshold) return;
  const msg = redact(rawMsg);
  const fields = rawFields && redactFields(rawFields);
  const time = new Date().toISOString();
  let line: string;
  if (json) {
    line = JSON.stringify({ time, level, component, msg, ...fields });
  } else {
    const extra = fields && Object.keys(fields).length ? ' ' + JSON.stringify(fields) : '';
    line = `${time} ${level.toUpperCase().padEnd(5)} [${component}] ${msg}${extra}`;
  }
  (level === 'error' || level === 'warn' ? process.stderr : process.stdout).write(line + '\n');
}

export function createLogger(component: string): Logger {
  return {
    debug: (m, f) => write('debug', component, m, f),
    info: (m, f) => write('info', component, m, f),
    warn: (m, f) => write('warn', component, m, f),
    error: (m, f) => write('error', component, m, f),
    child: (sub) => createLogger(`${component}:${sub}`),
  };
}

export function errorFields(err: unknown): Record<string, unknown> {
  if (err instanceof Error) return { error: err.message, stack: err.stack?.split('\n').slice(0, 6).join('\n') };
  return { error: String(err) };
}
