// Which code a measurement ran: the short commit id, '+dirty' when the paths that make the measured code
// (the agent, the builder, the rig, ...) have uncommitted changes. Benchmarks and soaks write it beside their numbers.
import { REPO } from '../builder/image/agentbuild.ts';

export function measuredCommit(paths: readonly string[]): string {
  const git = (args: string[]) =>
    Bun.spawnSync(['git', '-C', REPO, ...args])
      .stdout.toString()
      .trim();
  return git(['rev-parse', '--short', 'HEAD']) + (git(['status', '--porcelain', '--', ...paths]) ? '+dirty' : '');
}
