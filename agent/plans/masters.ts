// The order in which the node tries its masters (masterip=a,b,c, or a list from DHCP): each master once per round,
// in the given order, rounds apart by a growing wait. Pure: the master phase connects, this only orders.
// A dead first master so costs one connect timeout per round before the next one is asked, not every retry.

/** Bounded retries with exponential backoff: seconds to wait before round n+1 (n 0-based). */
export function backoff(round: number): number {
  return Math.min(30, 2 * 2 ** round);
}

export interface MasterAttempt {
  host: string;
  /** 0-based round; every master is tried once per round. */
  round: number;
  /** Seconds to wait before this attempt (the backoff, before the first master of each later round). */
  waitS: number;
}

/** Every attempt the phase may make, in order; it stops at the first master that answers. */
export function masterAttempts(hosts: readonly string[], rounds: number): MasterAttempt[] {
  const out: MasterAttempt[] = [];
  for (let round = 0; round < Math.max(1, rounds); round++)
    hosts.forEach((host, i) => out.push({ host, round, waitS: round > 0 && i === 0 ? backoff(round - 1) : 0 }));
  return out;
}

/**
 * Whether a failed master is asked again in a later round: one that did not answer may come up, one that answered
 * with the wrong host key (or refused the node key) answers the same way again, so it is passed over.
 */
export function askAgain(failure: 'down' | 'refused'): boolean {
  return failure === 'down';
}

/**
 * The next attempt to make from index `from` on, skipping the masters passed over; a skipped attempt's wait goes
 * to the next one made, so a later round still backs off. Null: no attempt is left.
 */
export function nextAttempt(
  attempts: readonly MasterAttempt[],
  from: number,
  passedOver: { has(host: string): boolean },
): { index: number; attempt: MasterAttempt; waitS: number } | null {
  let carried = 0;
  for (let index = from; index < attempts.length; index++) {
    const attempt = attempts[index] as MasterAttempt;
    if (!passedOver.has(attempt.host)) return { index, attempt, waitS: Math.max(attempt.waitS, carried) };
    carried = Math.max(carried, attempt.waitS);
  }
  return null;
}
