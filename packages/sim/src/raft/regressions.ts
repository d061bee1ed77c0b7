/**
 * Seeds that once failed, each with the one-line reason, replayed by CI on every run. A new
 * failing seed goes here (after the fix) so the bug it found stays fixed.
 */
export const RAFT_REGRESSION_SEEDS: ReadonlyArray<{
  readonly seed: number;
  readonly reason: string;
}> = [];
