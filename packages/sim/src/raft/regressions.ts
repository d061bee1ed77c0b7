/**
 * Seeds that once failed, each with the one-line reason, replayed by CI on every run. A new
 * failing seed goes here (after the fix) so the bug it found stays fixed.
 */
export const RAFT_REGRESSION_SEEDS: ReadonlyArray<{
  readonly seed: number;
  readonly reason: string;
}> = [
  {
    seed: 94913812558914,
    reason:
      "runner: a leader's own removal, proposed before healing, committed during the liveness " +
      "phase; the 'stable' leader stepped down and convergence was judged against it",
  },
];
