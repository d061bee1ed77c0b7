/**
 * Shared test suites for the interfaces in @hes/base. A suite is a list of named cases that
 * any test runner registers; every implementation of an interface runs the same list, which is
 * how a fake (SimDisk) is proved faithful to the real thing (FileDisk).
 */
export { type DiskSuiteFactory, diskSuite } from "./disk-suite.js";
export { expectBytesEqual, expectRejects, type SuiteCase } from "./expect.js";
