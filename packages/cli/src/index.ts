/**
 * @hes/cli: the `hes` command (bin/hes.mjs runs `main`). Exported for tests and for tools that
 * embed the command line.
 */
export { EXIT_CODE_BY_HES_CODE, EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./exit-codes.js";
export { type CliIo, main, parseNbdTarget } from "./main.js";
export { formatSize, parseSize, UsageError } from "./units.js";
