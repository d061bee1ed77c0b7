/**
 * @hes/base: what every other package stands on. Pure: no `node:` imports, no process state.
 */
export { AssertionError, assert, unreachable } from "./assert.js";
export {
  AlignedBufferPool,
  type AlignedBufferPoolOptions,
  BUFFER_ALIGNMENT_BYTES,
  BUFFER_ARENA_BYTES_DEFAULT,
  BUFFER_POOL_CAPACITY_BYTES_DEFAULT,
  BUFFER_POOL_WAITERS_MAX,
  type BufferPoolStats,
  isAlignedBuffer,
} from "./buffer-pool.js";
export { type Clock, sleepWithTimer, systemClock, type Timer } from "./clock.js";
export { checkDiskRange, DISK_BLOCK_SIZE_BYTES, type Disk, totalLength } from "./disk.js";
export {
  HES_ERROR_CODES,
  HesError,
  type HesErrorCode,
  type HesErrorOptions,
  isHesError,
  isHesErrorCode,
  throwIfAborted,
} from "./errors.js";
export {
  type LogFn,
  type Logger,
  type LogRecord,
  nullLogger,
  RecordingLogger,
} from "./logger.js";
export { PRNG_SEED_MAX, Prng } from "./prng.js";
export {
  isNodeId,
  NODE_ID_MAX,
  type NodeId,
  type Transport,
  type TransportHandler,
} from "./transport.js";
export { checkBytes, checkInteger, type IntegerBounds, toSafeNumber } from "./validate.js";
