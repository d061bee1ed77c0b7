#!/usr/bin/env -S node --initial-old-space-size=256
// The `hes` command. Runs the built CLI; under `--conditions=hes-source --import tsx` (tests,
// development) the package's self-reference resolves to the TypeScript sources instead.
process.env.UV_THREADPOOL_SIZE ??= "16";
const { main } = await import("@hes/cli/main");
process.exitCode = await main(process.argv.slice(2));
