/**
 * @hes/blockdev: the in-process virtual disk. Today: the BlockDevice contract that exporters
 * (NBD) and volumes share, and MemoryBlockDevice, a sparse in-memory implementation for tests
 * and demos. The Volume itself arrives with issue 6 (see README).
 */
export type {
  AllocationExtent,
  BlockDevice,
  RangeRequest,
  WriteRequest,
  WriteZeroesRequest,
} from "./block-device.js";
export {
  MEMORY_DEVICE_BLOCK_BYTES,
  MEMORY_DEVICE_LOGICAL_BLOCK_BYTES,
  MEMORY_DEVICE_MAX_REQUEST_BYTES_DEFAULT,
  MEMORY_DEVICE_SIZE_BYTES_MAX,
  MemoryBlockDevice,
  type MemoryBlockDeviceOptions,
  type MemoryBlockDeviceStats,
} from "./memory-block-device.js";
