/**
 * @hes/extent-store: one host's direct-attached disks. Today it holds the real `Disk` over a file
 * or raw block device; the log-structured chunk store builds on it (see README).
 */
export {
  FileDisk,
  type FileDiskOptions,
  type FileDiskSyscalls,
  fileDiskSyscalls,
} from "./file-disk.js";
