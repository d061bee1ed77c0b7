/**
 * Parsing of the CLI's typed flag values: sizes with units, node ids, names. Each parser throws
 * a UsageError naming the flag and showing a valid example, before anything is sent anywhere.
 */

/** A bad command line: exit code 2, nothing was changed. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  B: 1,
  KiB: 2 ** 10,
  MiB: 2 ** 20,
  GiB: 2 ** 30,
  TiB: 2 ** 40,
  PiB: 2 ** 50,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
};

/** "10GiB", "64MiB", "4096", "1.5TiB" → bytes (binary units; "G" means GiB). */
export function parseSize(text: string, flag: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(text.trim());
  const unit = match?.[2] ?? "";
  const multiplier = SIZE_UNITS[unit];
  if (match?.[1] === undefined || multiplier === undefined) {
    throw new UsageError(`${flag}: ${JSON.stringify(text)} is not a size; write e.g. 10GiB, 64MiB`);
  }
  const bytes = Number(match[1]) * multiplier;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UsageError(`${flag}: ${JSON.stringify(text)} must be a whole number of bytes > 0`);
  }
  return bytes;
}

/** Bytes in the largest binary unit that keeps 1–3 digits: 10737418240 → "10 GiB". */
export function formatSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const shown = Number.isInteger(value) ? String(value) : value.toFixed(1);
  return `${shown} ${units[unit]}`;
}

export function parseInteger(text: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: ${JSON.stringify(text)} is not a number`);
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`${flag}: ${value} is out of range [${min}, ${max}]`);
  }
  return value;
}

export function parseNodeId(text: string, flag = "ID"): number {
  return parseInteger(text, flag, 1, 2 ** 32 - 1);
}

/** Volume and snapshot names: 1–128 of [A-Za-z0-9._-], not starting with a dot or dash. */
export function parseName(text: string, what: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(text)) {
    throw new UsageError(
      `${what}: ${JSON.stringify(text)} is not a valid name (1–128 of A-Z a-z 0-9 . _ -)`,
    );
  }
  return text;
}
