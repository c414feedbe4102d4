// Phase "master": one SSH connection, then the wanted table, the stamps and this node's flags in one go.
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { ToolError } from '../sys/exec.ts';
import { MasterLink, RsyncdLink, type Link } from '../net/link.ts';
import { info, uptime, warn } from '../log.ts';
import { type MasterWants, type Phase, type StampFile } from '../phase.ts';
import {
  APPROVAL_REQUIRED,
  APPROVED_DIR,
  ENROLLED_FLAG,
  fetchFilter,
  FILES_DIR,
  masterBase,
  NODE_FILES_MAX,
  NODES_DIR,
  PARTITION_TABLE,
  RESET_FLAG,
  SMALL_FETCH_OPTIONS,
  TFTP_DIR,
} from '../contract/tree.ts';
import { ANNOUNCEMENT_FILE } from '../contract/firststage.ts';
import { parseStamp, sigPath, stampPath, type StampName } from '../contract/stamp.ts';
import { decideManifest, manifestPath, manifestSigPath } from '../contract/manifest.ts';
import { tableHash } from '../contract/approval.ts';
import { stampKey } from '../contract/initramfs.ts';
import { PhaseFailure } from '../errors.ts';
import { FETCH_DIR } from '../paths.ts';
import { preconnectReport } from '../net/report.ts';
import { readSmall } from '../sys/fsutil.ts';
import { askAgain, masterAttempts, nextAttempt } from '../plans/masters.ts';

/** A file of the fetch, read bounded and never through a link: a hostile or broken master must not stall PID 1. */
function readOr(path: string): string | null {
  const r = readSmall(path);
  if (r.refused) warn('master', `${path.slice(FETCH_DIR.length + 1)} from the master is ${r.refused}: refused`);
  return r.text;
}

function stampFile(name: StampName): StampFile | null {
  const text = readOr(`${FETCH_DIR}/${stampPath(name)}`);
  return text === null ? null : { text, sig: readOr(`${FETCH_DIR}/${sigPath(name)}`)?.trim() ?? null };
}

function manifestFile(): StampFile | null {
  const text = readOr(`${FETCH_DIR}/${manifestPath('rootfs')}`);
  return text === null ? null : { text, sig: readOr(`${FETCH_DIR}/${manifestSigPath('rootfs')}`)?.trim() ?? null };
}

/**
 * The small state against the signed manifest: with a stamp key, a table, approval switch or reset flag the
 * manifest does not carry (or no valid manifest at all) makes the node ignore all three: it keeps its disk and boots
 * its last root (the root phase refuses the sync too). Without a key a mismatch is only reported.
 */
function holdToManifest(wanted: MasterWants, host: string | null): void {
  const key = stampKey();
  const parsed = wanted.rootfs ? parseStamp(wanted.rootfs.text) : null;
  const v = decideManifest({
    text: wanted.rootfsManifest?.text ?? null,
    sig: wanted.rootfsManifest?.sig ?? null,
    publicKeyPem: key,
    stamp: parsed?.ok ? { id: parsed.stamp.id, seq: parsed.stamp.seq } : null,
    state: {
      tableSha256: wanted.table === null ? null : tableHash(wanted.table),
      approvalRequired: wanted.approvalRequired,
      reset: wanted.reset,
      host,
    },
  });
  wanted.manifest = v;
  const problems = v.ok ? v.stateMismatch : [v.reason];
  if (key === null) {
    if (v.ok && problems.length > 0)
      warn(
        'master',
        `the master's state differs from its rootfs manifest (${problems.join('; ')}): run \`builder publish rootfs\` after changing it`,
      );
    return;
  }
  if (problems.length === 0) return;
  warn(
    'master',
    `refused the master's table, approval switch and reset flag: ${problems.join('; ')}. ` +
      `Remedy: ${v.ok ? 'run `builder publish rootfs --sign <stamp key>` after changing partitions.sfdisk, approval.required or nodes/<host>/reset' : v.remedy}. The disk is left as it is`,
  );
  wanted.table = null;
  wanted.reset = false;
  wanted.approvalRequired = false;
  wanted.approvedHash = null;
  if (v.ok)
    wanted.manifest = {
      ok: false,
      reason: problems.join('; '),
      remedy: 'run `builder publish rootfs --sign <stamp key>` after changing the master state',
    };
}

export const master: Phase = {
  name: 'master',
  needs: { tools: ['ssh', 'rsync'] },
  async run(ctx) {
    const hosts = ctx.facts.masters?.length ? ctx.facts.masters : ctx.facts.master ? [ctx.facts.master] : [];
    if (hosts.length === 0) {
      ctx.facts.online = false;
      warn('master', 'no master known (masterip= or DHCP): continuing offline');
      return 'offline: no master';
    }
    const p = ctx.params;
    const linkTo = (host: string): Link =>
      p.transport === 'rsyncd'
        ? new RsyncdLink({ host, user: p.masterUser, port: p.masterPort === 22 ? 873 : p.masterPort })
        : new MasterLink({ host, user: p.masterUser, port: p.masterPort });
    const tries = Math.max(1, ctx.params.retries);
    const attempts = masterAttempts(hosts, tries);
    const passedOver = new Map<string, PhaseFailure>();
    const why = new Map<string, string>();
    let link: Link | null = null;
    let host = hosts[0] as string;
    let last: PhaseFailure | null = null;
    for (let n = nextAttempt(attempts, 0, passedOver); n; n = nextAttempt(attempts, n.index + 1, passedOver)) {
      const a = n.attempt;
      if (n.waitS > 0) {
        warn('master', `${last?.message ?? 'no master answered'}; round ${a.round + 1}/${tries} in ${n.waitS}s`);
        await Bun.sleep(n.waitS * 1000);
      }
      const t0 = uptime();
      const l = linkTo(a.host);
      try {
        await l.open();
        link = l;
        host = a.host;
        info('master', `connected to ${a.host}:${l.target.port} in ${(uptime() - t0).toFixed(2)}s`);
        break;
      } catch (e) {
        const f = e instanceof PhaseFailure ? e : new PhaseFailure(String(e), 'check the master', 'master');
        last = f;
        why.set(a.host, f.message);
        if (!askAgain(f.ledCode === 'hostkey' ? 'refused' : 'down')) passedOver.set(a.host, f);
        const next = nextAttempt(attempts, n.index + 1, passedOver)?.attempt;
        if (hosts.length > 1)
          warn(
            'master',
            `master ${a.host}: ${f.message}${next && next.round === a.round ? `; failing over to ${next.host}` : ''}`,
          );
      }
    }
    if (!link) {
      // a master that answered with the wrong host key is someone else, or a reinstalled master: loud, never offline
      const refused = [...passedOver.values()][0];
      if (refused && passedOver.size === hosts.length) throw refused;
      ctx.facts.online = false;
      warn(
        'master',
        `${hosts.length > 1 ? `none of the masters ${hosts.join(', ')} answered` : (last?.message ?? 'no answer')} after ${tries} attempts: continuing offline (no disk changes)`,
      );
      return 'offline: master unreachable';
    }
    ctx.facts.master = host;
    const failover = hosts.slice(0, hosts.indexOf(host)).map((h) => `${h}: ${why.get(h) ?? 'not asked'}`);
    if (failover.length) {
      ctx.facts.masterFailover = failover;
      warn('master', `served by ${host} after failing over from ${failover.join('; ')}`);
    }
    ctx.facts.link = link;
    rmSync(FETCH_DIR, { recursive: true, force: true });
    mkdirSync(FETCH_DIR, { recursive: true });
    const base = masterBase(ctx.params.masterRoot);
    const node = ctx.facts.hostname;
    try {
      // one rsync of the master root, filtered to what this node needs (rrsync refuses a missing path, a
      // filter does not): the table, the stamps, the approval switch and this node's approval and files
      // nothing over 64 KiB, links as links: a hostile master cannot fill /run or point PID 1 at a device
      const small = await link.rsync(
        [
          '-rlpt',
          ...SMALL_FETCH_OPTIONS,
          '--timeout=60',
          ...fetchFilter(node),
          link.remote(base || './'),
          `${FETCH_DIR}/`,
        ],
        { okCodes: [0, 23] },
      );
      for (const line of `${small.stdout}\n${small.stderr}`.split('\n')) {
        const big = /^(.+) is over max-size$/.exec(line)?.[1];
        if (big) warn('master', `${big} from the master is over 64 KiB: refused (not fetched)`);
      }
      if (node && existsSync(`${FETCH_DIR}/${NODES_DIR}/${node}`))
        renameSync(`${FETCH_DIR}/${NODES_DIR}/${node}`, `${FETCH_DIR}/node`);
      else mkdirSync(`${FETCH_DIR}/node`, { recursive: true });
      // this node's own files: links allowed (an admin's /etc/localtime), bounded per file
      if (node && existsSync(`${FETCH_DIR}/node/${FILES_DIR}`))
        await link.rsync(
          [
            '-rlpt',
            `--max-size=${NODE_FILES_MAX}`,
            '--timeout=60',
            link.remote(`${base}${NODES_DIR}/${node}/${FILES_DIR}/`),
            `${FETCH_DIR}/node/${FILES_DIR}/`,
          ],
          { okCodes: [0, 23] },
        );
    } catch (e) {
      if (e instanceof PhaseFailure) throw e;
      ctx.facts.online = false;
      warn(
        'master',
        `could not fetch from the master: ${e instanceof ToolError ? e.message : String(e)}; continuing offline`,
      );
      return 'offline: fetch failed';
    }
    const approved = node ? readOr(`${FETCH_DIR}/${APPROVED_DIR}/${node}`) : null;
    const wanted: MasterWants = {
      table: readOr(`${FETCH_DIR}/${PARTITION_TABLE}`),
      rootfs: stampFile('rootfs'),
      bootfs: stampFile('bootfs'),
      reset: existsSync(`${FETCH_DIR}/node/${RESET_FLAG}`),
      approvalRequired: existsSync(`${FETCH_DIR}/${APPROVAL_REQUIRED}`),
      approvedHash: approved === null ? null : approved.trim().toLowerCase(),
      nodeFiles: existsSync(`${FETCH_DIR}/node/${FILES_DIR}`),
      enrolled: existsSync(`${FETCH_DIR}/node/${ENROLLED_FLAG}`),
      firstStage: readOr(`${FETCH_DIR}/${TFTP_DIR}/${ANNOUNCEMENT_FILE}`),
      rootfsManifest: manifestFile(),
    };
    holdToManifest(wanted, node ?? null);
    ctx.facts.wanted = wanted;
    ctx.facts.online = true;
    preconnectReport(ctx);
    const id = (s: StampFile | null) => (s ? (/^id (\S+)/m.exec(s.text)?.[1] ?? '?') : 'none');
    info(
      'master',
      `master ${host}: table ${wanted.table ? 'present' : 'MISSING'}, rootfs stamp ${id(wanted.rootfs)}, ` +
        `bootfs stamp ${id(wanted.bootfs)}${wanted.reset ? ', reset flag set for this node' : ''}` +
        `${wanted.nodeFiles ? ', per-node files' : ''}${wanted.enrolled ? ', enrolled (private files)' : ''}${wanted.approvalRequired ? `, approval mode (${wanted.approvedHash ? 'an approval' : 'no approval'} for this node)` : ''}`,
      { handshakes: link.handshakes },
    );
    if (!wanted.table) warn('master', 'the master has no partitions.sfdisk: the disk will not be partitioned');
    return `online, ${link.handshakes} SSH handshake(s)`;
  },
};
