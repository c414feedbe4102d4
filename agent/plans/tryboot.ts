// The firmware path's commit point: keep the first stage that booted well in one of p1's two sets, and take a new
// one through the firmware's one-shot tryboot. Pure: facts (the switch, the sets, the tryboot flag, what booted,
// what the master announces) -> actions with describe(); agent/phases/firmware.ts reads the facts and runs them.
//
// Why it is safe: the set [all] names (current) is never written. A new pair goes into the other set, its record
// last; only then does the switch name it under [tryboot] (one atomic rename of clusterboot.config.txt), and the
// node reboots with "0 tryboot". The firmware clears that flag before it starts the kernel, so a pair that
// panics, hangs (watchdog) or loses power boots the current set next time by itself. The switch makes the trial
// current only when the trial boot reached the master (this phase runs after the root phase: the commit point).
import {
  setDir,
  type BootSetSource,
  type FirmwareAnnouncement,
  type SetName,
  type SwitchState,
} from '../contract/firmware.ts';

export interface TrybootFacts {
  online: boolean;
  announcement: FirmwareAnnouncement | null;
  announcementError?: string;
  /** What this boot's cmdline.txt says: the set id and where the firmware loaded it (a, b, or net). */
  booted: { id?: string; set?: BootSetSource };
  /** /proc/device-tree/chosen/bootloader/tryboot is 1: the firmware booted with the tryboot flag. */
  tryboot: boolean;
  /** p1's clusterboot.config.txt, parsed (null: absent: no committed set on this card). */
  sw: SwitchState | null;
  /** The id each p1 set's record names (null: no complete set there). */
  sets: Record<SetName, string | null>;
  /** Free bytes on p1, and the bytes the set to be overwritten occupies now (they come back). */
  p1Free: number;
  reclaimBytes: (s: SetName) => number;
  maxTries: number;
}

export type TrybootAction =
  | { kind: 'switch'; state: SwitchState; describe(): string }
  | { kind: 'write-set'; set: SetName; id: string; describe(): string }
  | { kind: 'reboot-tryboot'; describe(): string };

export interface TrybootPlan {
  actions: TrybootAction[];
  message: string;
  warnings: string[];
}

const other = (s: SetName): SetName => (s === 'a' ? 'b' : 'a');

const act = {
  switch: (state: SwitchState): TrybootAction => ({
    kind: 'switch',
    state,
    describe: () =>
      `write p1:/clusterboot.config.txt: [all] os_prefix=${setDir(state.current)}/, [tryboot] os_prefix=${setDir(state.trial)}/` +
      `${state.tries ? ` (try ${state.tries})` : ''}${state.failed ? `, ${state.failed} abandoned` : ''}`,
  }),
  writeSet: (set: SetName, id: string): TrybootAction => ({
    kind: 'write-set',
    set,
    id,
    describe: () => `rsync the master's firmware set ${id} into p1:/${setDir(set)}/, check every file, record last`,
  }),
  reboot: (): TrybootAction => ({
    kind: 'reboot-tryboot',
    describe: () => 'reboot(LINUX_REBOOT_CMD_RESTART2, "0 tryboot"): the firmware boots the [tryboot] set once',
  }),
};

export function planTryboot(f: TrybootFacts): TrybootPlan {
  const warnings: string[] = [];
  const none = (message: string): TrybootPlan => ({ actions: [], message, warnings });
  const b = f.booted;
  const sw = f.sw;
  const a = f.announcement;
  const inTrial = f.tryboot && sw !== null && b.set !== undefined && b.set !== 'net' && b.set === sw.trial;

  // 1. the trial boot reached the master: it becomes the current set
  if (inTrial && sw && b.set !== 'net' && b.set !== undefined && sw.current !== b.set) {
    if (!f.online)
      return none(
        `tryboot of set ${b.set} (${b.id ?? '?'}) did not reach the master: not committed; the next boot runs set ${sw.current} again`,
      );
    return {
      actions: [act.switch({ current: b.set, trial: b.set, tries: 0 })],
      message: `tryboot of set ${b.set} (${b.id ?? '?'}) reached the master: committed, set ${sw.current} kept as the previous one`,
      warnings,
    };
  }
  if (!f.online) return none(`master offline: the p1 sets stay as they are (${sw ? `current ${sw.current}` : 'none'})`);
  if (!a) {
    if (f.announcementError)
      warnings.push(
        `the master's firmware announcement is unusable: ${f.announcementError}; run \`builder stage --first-stage firmware\``,
      );
    return none('the master announces no firmware first stage: the p1 sets stay as they are');
  }
  const need = a.files.reduce((n, x) => n + x.size, 0);
  const fits = (s: SetName) => need <= f.p1Free + f.reclaimBytes(s);
  const noRoom = (s: SetName) =>
    warnings.push(
      `the firmware set ${a.id} does not fit on p1: it needs ${(need / 1e6).toFixed(0)} MB, ` +
        `${((f.p1Free + f.reclaimBytes(s)) / 1e6).toFixed(0)} MB are free for p1:/${setDir(s)}/; the node keeps booting it by TFTP (enlarge p1 in the master's table)`,
    );

  // 2. a card without a committed set, booted by TFTP: this boot proved the pair, so it is current at once
  if (sw === null) {
    if (b.set !== 'net' || b.id !== a.id)
      return none(
        `no committed set on p1 and this boot runs ${b.id ?? 'an unknown first stage'} from ${b.set ?? '?'}, the master announces ${a.id}: the next TFTP boot brings it`,
      );
    if (!fits('a')) {
      noRoom('a');
      return none('the set does not fit on p1');
    }
    return {
      actions: [
        ...(f.sets.a === a.id ? [] : [act.writeSet('a', a.id)]),
        act.switch({ current: 'a', trial: 'a', tries: 0 }),
      ],
      message: `first stage ${a.id} booted well by TFTP: kept in p1:/${setDir('a')}/ as the current set`,
      warnings,
    };
  }

  const curId = f.sets[sw.current];
  // 3. a trial left pending on a normal boot: the tryboot failed (the firmware fell back by itself), or the
  //    node lost power before it rebooted into it; tried again up to maxTries, then abandoned
  if (sw.trial !== sw.current && !f.tryboot) {
    const trialId = sw.trialId ?? f.sets[sw.trial] ?? '?';
    if (trialId === a.id && f.sets[sw.trial] === a.id) {
      if (sw.tries >= f.maxTries) {
        warnings.push(
          `first stage ${a.id} failed ${sw.tries} tryboots in a row (set ${sw.trial}) and was abandoned: this boot runs set ${sw.current} (${curId ?? '?'}); ` +
            'fix the image on the master and run `builder stage --first-stage firmware` (a newer one is tried again)',
        );
        return {
          actions: [act.switch({ current: sw.current, trial: sw.current, tries: 0, failed: a.id })],
          message: `tryboot of ${a.id} abandoned after ${sw.tries} tries`,
          warnings,
        };
      }
      return {
        actions: [
          act.switch({ current: sw.current, trial: sw.trial, trialId: a.id, tries: sw.tries + 1 }),
          act.reboot(),
        ],
        message: `the tryboot of ${a.id} (set ${sw.trial}) did not commit: try ${sw.tries + 1} of ${f.maxTries}`,
        warnings,
      };
    }
  }
  if (sw.failed === a.id) {
    warnings.push(
      `first stage ${a.id} was abandoned after its tryboots: set ${sw.current} (${curId ?? '?'}) stays until the master announces another`,
    );
    return none(`running set ${sw.current}; ${a.id} stays abandoned`);
  }
  if (curId === a.id) {
    // in sync; a stale trial pointer (another announcement since) is folded back so no tryboot picks it
    if (sw.trial !== sw.current)
      return {
        actions: [act.switch({ current: sw.current, trial: sw.current, tries: 0 })],
        message: `the current set ${sw.current} holds the announced ${a.id}; the stale trial of set ${sw.trial} dropped`,
        warnings,
      };
    return none(`first stage ${a.id} is the current set ${sw.current} on p1`);
  }

  // 4. the master announces another pair: into the other set, then a tryboot
  const target = other(sw.current);
  if (f.sets[target] !== a.id && !fits(target)) {
    noRoom(target);
    return none('the set does not fit on p1');
  }
  const actions: TrybootAction[] = [];
  // nothing may name the set being written: fold a pending trial back first (crash-safe order)
  if (sw.trial !== sw.current) actions.push(act.switch({ current: sw.current, trial: sw.current, tries: 0 }));
  if (f.sets[target] !== a.id) actions.push(act.writeSet(target, a.id));
  actions.push(act.switch({ current: sw.current, trial: target, trialId: a.id, tries: 1 }), act.reboot());
  return {
    actions,
    message: `the master announces ${a.id}, set ${sw.current} holds ${curId ?? 'nothing verified'}: writing set ${target} and trying it once (tryboot)`,
    warnings,
  };
}
