/**
 * @hes/blockdev: The in-process virtual disk: Volume with read/write/flush/discard/writeZeroes/compareAndWrite/copyRange, snapshots, clones and changed-block diff.
 *
 * Not built yet: this package exports nothing until its issue lands (see README.md).
 */
export {};
