/**
 * Encoding and decoding of cluster-map commands (`ClusterCommand` in cluster_map.proto).
 *
 * Proposers build commands with {@link encodeCommand}, using plain numbers where the wire has
 * uint64 (converted here, so callers never juggle bigints). The leader stamps each proposal
 * with its clock ({@link stampCommand}) before appending it: that stamp is the only time the
 * state machine sees.
 */
import { create, type DescMessage, fromBinary, ScalarType, toBinary } from "@bufbuild/protobuf";
import { HesError } from "@hes/base";
import { type ClusterCommand, ClusterCommandSchema } from "@hes/proto";
import { CLUSTER_COMMAND_VERSION, COMMAND_BYTES_MAX } from "../limits.js";

/** Every command kind: the `case` of `ClusterCommand.command`. */
export type CommandKind = Exclude<ClusterCommand["command"]["case"], undefined>;

/** The message type of one command kind. */
export type CommandMessage<K extends CommandKind> = Extract<
  ClusterCommand["command"],
  { case: K }
>["value"];

/** A message's fields as plain data: numbers for uint64, nested messages as plain objects. */
export type PlainFields<T> = T extends bigint
  ? number
  : T extends readonly (infer U)[]
    ? PlainFields<U>[]
    : T extends object
      ? { [K in keyof T as K extends "$typeName" | "$unknown" ? never : K]?: PlainFields<T[K]> }
      : T;

/** The fields of one command kind, as accepted by {@link encodeCommand}. */
export type CommandFields<K extends CommandKind> = PlainFields<CommandMessage<K>>;

const LONG_SCALARS = new Set<ScalarType>([
  ScalarType.INT64,
  ScalarType.UINT64,
  ScalarType.SINT64,
  ScalarType.FIXED64,
  ScalarType.SFIXED64,
]);

/** Converts plain numbers to the bigints protobuf-es wants for 64-bit fields, recursively. */
function toInit(desc: DescMessage, plain: Readonly<Record<string, unknown>>): object {
  const init: Record<string, unknown> = {};
  for (const field of desc.fields) {
    const value = plain[field.localName];
    if (value === undefined) continue;
    if (field.fieldKind === "scalar" && LONG_SCALARS.has(field.scalar)) {
      init[field.localName] = BigInt(value as number);
    } else if (field.fieldKind === "message") {
      init[field.localName] = toInit(field.message, value as Record<string, unknown>);
    } else if (field.fieldKind === "list" && field.listKind === "message") {
      const items = value as readonly Record<string, unknown>[];
      init[field.localName] = items.map((item) => toInit(field.message, item));
    } else if (field.fieldKind === "list" && field.listKind === "scalar") {
      const long = LONG_SCALARS.has(field.scalar);
      init[field.localName] = (value as readonly unknown[]).map((item) =>
        long ? BigInt(item as number) : item,
      );
    } else {
      init[field.localName] = value;
    }
  }
  return init;
}

/** Options for {@link encodeCommand}. */
export interface EncodeCommandOptions {
  /** Leader time to stamp (0: unstamped; the leader stamps it with {@link stampCommand}). */
  readonly timeMs?: number;
  /** Command language version; only tests set anything but the current one. */
  readonly version?: number;
}

/**
 * Encodes one command. Throws RangeError/TypeError for numbers that are not safe integers
 * (a caller bug); the state machine re-checks every field when it applies the command.
 */
export function encodeCommand<K extends CommandKind>(
  kind: K,
  fields: CommandFields<K>,
  options: EncodeCommandOptions = {},
): Uint8Array {
  const timeMs = options.timeMs ?? 0;
  if (!Number.isSafeInteger(timeMs) || timeMs < 0) {
    throw new RangeError(`timeMs must be a safe non-negative integer, got ${timeMs}`);
  }
  const oneof = ClusterCommandSchema.fields.find((field) => field.localName === kind);
  if (oneof === undefined || oneof.fieldKind !== "message") {
    throw new TypeError(`unknown cluster command kind ${String(kind)}`);
  }
  const value = toInit(oneof.message, fields as Record<string, unknown>);
  const message = create(ClusterCommandSchema, {
    version: options.version ?? CLUSTER_COMMAND_VERSION,
    timeMs: BigInt(timeMs),
    command: { case: kind, value } as ClusterCommand["command"],
  });
  return toBinary(ClusterCommandSchema, message);
}

/**
 * Decodes a command. Malformed bytes or an oversized command throw a HesError
 * (HES_INVALID_ARGUMENT / HES_TOO_LARGE); the version is not checked here.
 */
export function decodeCommand(bytes: Uint8Array): ClusterCommand {
  if (bytes.byteLength > COMMAND_BYTES_MAX) {
    throw new HesError(
      "HES_TOO_LARGE",
      `cluster command of ${bytes.byteLength} bytes exceeds ${COMMAND_BYTES_MAX}`,
    );
  }
  try {
    return fromBinary(ClusterCommandSchema, bytes);
  } catch (cause) {
    throw new HesError("HES_INVALID_ARGUMENT", "cluster command is not a valid ClusterCommand", {
      cause,
    });
  }
}

/**
 * The leader's step before appending a proposal: checks that it decodes and stamps it with
 * the leader's clock (`timeMs`, ms since the epoch). Throws HesError for a malformed command,
 * so the proposer hears of it at once.
 */
export function stampCommand(bytes: Uint8Array, timeMs: number): Uint8Array {
  if (!Number.isSafeInteger(timeMs) || timeMs <= 0) {
    throw new RangeError(`timeMs must be a positive safe integer, got ${timeMs}`);
  }
  const command = decodeCommand(bytes);
  command.timeMs = BigInt(timeMs);
  return toBinary(ClusterCommandSchema, command);
}
