/**
 * @hes/blockdev: the in-process virtual disk. Today: the BlockDevice contract that exporters
 * (NBD) and volumes share. The Volume itself arrives with issue 6 (see README).
 */
export type {
  AllocationExtent,
  BlockDevice,
  RangeRequest,
  WriteRequest,
  WriteZeroesRequest,
} from "./block-device.js";
