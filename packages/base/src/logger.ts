/**
 * The logger every package takes by injection. Its shape is a subset of pino's, so a pino
 * logger is passed as is; tests pass `nullLogger` or a recording logger. Library code never
 * writes to the console.
 */

/** One pino-style log method: `log(obj, msg)` or `log(msg)`. */
export interface LogFn {
  (object: object, message?: string): void;
  (message: string): void;
}

/** A structured logger compatible with pino's `Logger`. */
export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  /** A logger that adds `bindings` to every record (pino's `child`). */
  child(bindings: Record<string, unknown>): Logger;
}

const ignore: LogFn = () => {};

/** A logger that drops everything. */
export const nullLogger: Logger = {
  trace: ignore,
  debug: ignore,
  info: ignore,
  warn: ignore,
  error: ignore,
  fatal: ignore,
  child: () => nullLogger,
};

/** One record captured by {@link RecordingLogger}. */
export interface LogRecord {
  readonly level: "trace" | "debug" | "info" | "warn" | "error" | "fatal";
  readonly message: string | undefined;
  readonly fields: Readonly<Record<string, unknown>>;
}

/** A logger that keeps records in memory (bounded), for tests that assert on what was logged. */
export class RecordingLogger implements Logger {
  readonly records: LogRecord[];
  private readonly bindings: Record<string, unknown>;
  private readonly recordsMax: number;

  constructor(
    recordsMax = 10_000,
    bindings: Record<string, unknown> = {},
    records: LogRecord[] = [],
  ) {
    this.recordsMax = recordsMax;
    this.bindings = bindings;
    this.records = records;
  }

  readonly trace: LogFn = (a: object | string, b?: string) => this.push("trace", a, b);
  readonly debug: LogFn = (a: object | string, b?: string) => this.push("debug", a, b);
  readonly info: LogFn = (a: object | string, b?: string) => this.push("info", a, b);
  readonly warn: LogFn = (a: object | string, b?: string) => this.push("warn", a, b);
  readonly error: LogFn = (a: object | string, b?: string) => this.push("error", a, b);
  readonly fatal: LogFn = (a: object | string, b?: string) => this.push("fatal", a, b);

  child(bindings: Record<string, unknown>): Logger {
    return new RecordingLogger(this.recordsMax, { ...this.bindings, ...bindings }, this.records);
  }

  private push(level: LogRecord["level"], a: object | string, b: string | undefined): void {
    if (this.records.length >= this.recordsMax) this.records.shift();
    if (typeof a === "string") {
      this.records.push({ level, message: a, fields: { ...this.bindings } });
    } else {
      this.records.push({ level, message: b, fields: { ...this.bindings, ...a } });
    }
  }
}
