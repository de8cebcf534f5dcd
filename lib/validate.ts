// validate.ts: option checks shared by every public entry point. Messages follow one shape,
// "Expected <what> for <name> but received <value> of type <type>", so users see which
// option is wrong, what was expected and what came; tests match these messages.

export class ByolOptionError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = 'ByolOptionError';
  }
}

function describeValue(value: unknown): string {
  let shown: string;
  if (typeof value === 'string') shown = JSON.stringify(value);
  else if (typeof value === 'bigint') shown = `${value}n`;
  else if (Array.isArray(value)) shown = `[${value.map(String).join(', ')}]`;
  else if (value && typeof value === 'object') shown = (value as object).constructor?.name ?? 'object';
  else shown = String(value);
  const type = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  return `${shown} of type ${type}`;
}

export function invalid(name: string, expected: string, value: unknown): ByolOptionError {
  return new ByolOptionError(`Expected ${expected} for ${name} but received ${describeValue(value)}`);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) &&
    (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null);
}

export function integer(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(name, `integer between ${min} and ${max}`, value);
  }
  return value;
}

export function number(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw invalid(name, `number between ${min} and ${max}`, value);
  }
  return value;
}

export function boolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalid(name, 'boolean', value);
  return value;
}

export function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  }
  return value as T;
}

export function string(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(name, 'non-empty string', value);
  return value;
}

// Rejects keys that are not in `known`, naming the first unknown one and the valid ones,
// so that a typo ("lerningRate") fails before any work instead of being ignored.
export function knownKeys(name: string, value: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      throw new ByolOptionError(
        `Unknown option ${name ? `${name}.` : ''}${key}; expected one of ${known.join(', ')}`);
    }
  }
}

// Optional value: `undefined` gives the default, anything else must pass `check`.
export function withDefault<T>(value: unknown, fallback: T, check: (v: unknown) => T): T {
  return value === undefined ? fallback : check(value);
}

// A [low, high] pair of finite numbers with min <= low (min < low when strictMin) <= high <= max.
export function numberRange(name: string, value: unknown, min: number, max: number, strictMin = false): [number, number] {
  const expected = `array [low, high] of numbers with ${min} ${strictMin ? '<' : '<='} low <= high <= ${max}`;
  if (!Array.isArray(value) || value.length !== 2) throw invalid(name, expected, value);
  const [lo, hi] = value as unknown[];
  if (typeof lo !== 'number' || typeof hi !== 'number' || !Number.isFinite(lo) || !Number.isFinite(hi) ||
      (strictMin ? lo <= min : lo < min) || hi > max || lo > hi) {
    throw invalid(name, expected, value);
  }
  return [lo, hi];
}
