// Approval mode: a node whose disk has another partition table than the master's partitions.sfdisk does not
// repartition (and so does not wipe its disk) until the operator approves that exact table for that node.
//   <master root>/approval.required   exists: approval mode is on (`builder stage --approval` / `--no-approval`)
//   <master root>/approved/<hostname> sha256 hex of the partitions.sfdisk bytes + "\n": approves that table only;
//                                     a later table change needs a new approval.
// The agent reads both through the node key (read-only) and compares the hash with the table it fetched.
import { readSmallFile } from '../../agent/contract/smallread.ts';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeAtomic } from '../../agent/contract/atomic.ts';
import { parseNodeList, type NodeEntry } from './nodelist.ts';
import { NODES_LIST, APPROVAL_REQUIRED, APPROVED_DIR, PARTITION_TABLE } from '../../agent/contract/tree.ts';
import { approvalText, parseApproval, tableHash } from '../../agent/contract/approval.ts';

export const APPROVAL_REQUIRED_TEXT =
  '# clusterboot approval mode: while this file exists, a node whose disk has another partition table than\n' +
  '# partitions.sfdisk waits (its disk untouched) until `builder approve <node>` approves this table for it.\n' +
  '# Made by `builder stage --approval`; `builder stage --no-approval` removes it.\n';

const LABEL_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

export type ApprovalFor = 'approved' | 'approved for another table' | 'not approved';

/** Where a node stands for a table: its approval file's text (null: none) against the table's hash. */
export function approvalState(fileText: string | null, hash: string): ApprovalFor {
  if (fileText === null) return 'not approved';
  const h = parseApproval(fileText);
  return h === hash ? 'approved' : h === null ? 'not approved' : 'approved for another table';
}

export const approvalPath = (masterRoot: string, hostname: string) => join(masterRoot, APPROVED_DIR, hostname);

export function approvalModeOn(masterRoot: string): boolean {
  return existsSync(join(masterRoot, APPROVAL_REQUIRED));
}

/** Turns approval mode on or off; true when that changed something. */
export function setApprovalMode(masterRoot: string, on: boolean): boolean {
  const file = join(masterRoot, APPROVAL_REQUIRED);
  const st = statSync(file, { throwIfNoEntry: false });
  if (st && !st.isFile()) throw new Error(`${file} exists and is not a regular file: move it away`);
  if (on) {
    if (st && readFileSync(file, 'utf8') === APPROVAL_REQUIRED_TEXT) return false;
    writeAtomic(file, APPROVAL_REQUIRED_TEXT, 0o644);
    return !st;
  }
  if (!st) return false;
  unlinkSync(file);
  return true;
}

// Why: hostile names reach the operator's terminal: controls become visible (\x1b), '\' doubles so no two look alike.
export function escapeName(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f\\\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const n = c.charCodeAt(0);
    return c === '\\' ? '\\\\' : n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u{${n.toString(16)}}`;
  });
}

/** A directory entry: its name as text (UTF-8, else byte per character) and the exact bytes to open it by. */
export interface DirName {
  name: string;
  path: Buffer;
}

// Why: a name that is not UTF-8, read as a string, could not be opened again (its bytes replaced): open by the bytes.
export function listNames(dir: string): DirName[] {
  return readdirSync(dir, { encoding: 'buffer' })
    .map((b) => {
      const utf8 = b.toString('utf8');
      const name = Buffer.from(utf8, 'utf8').equals(b) ? utf8 : b.toString('latin1');
      return { name, path: Buffer.concat([Buffer.from(`${dir}/`), b]) };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Approval files larger than this are not approvals (64 hex digits and a newline). */
const MAX_APPROVAL = 200;

/** Every approval on the master: lower-cased host name -> hash, and what was not an approval (names escaped). */
export function readApprovals(masterRoot: string): { approvals: Map<string, string>; warnings: string[] } {
  const approvals = new Map<string, string>();
  const warnings: string[] = [];
  const dir = join(masterRoot, APPROVED_DIR);
  let names: DirName[] = [];
  try {
    names = listNames(dir).filter((n) => !n.name.startsWith('.'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      warnings.push(`cannot read ${escapeName(dir)}: ${escapeName((e as Error).message)}`);
  }
  for (const { name, path } of names) {
    const file = escapeName(join(dir, name));
    if (!LABEL_RE.test(name)) {
      warnings.push(`${file} is not an approval (its name is not a host name): remove it`);
      continue;
    }
    const r = readSmallFile(path, MAX_APPROVAL);
    if (r.kind === 'gone') continue;
    if (r.kind === 'not a file') {
      warnings.push(`${file} is ${r.what}, not a regular file: skipped, not read (an approval is a regular file)`);
      continue;
    }
    if (r.kind === 'too large') {
      warnings.push(`${file} is not an approval (${r.size} bytes): remove it`);
      continue;
    }
    if (r.kind === 'failed') {
      warnings.push(`cannot read ${file}: ${escapeName(r.message)}`);
      continue;
    }
    const h = parseApproval(r.data.toString('latin1'));
    if (h === null)
      warnings.push(
        `${file} is not an approval (not a sha256 hex line): remove it, or run \`builder approve ${name}\``,
      );
    else approvals.set(name.toLowerCase(), h);
  }
  return { approvals, warnings };
}

/** The master's table: its bytes' hash; null when there is none. */
export function readTableHash(masterRoot: string): string | null {
  try {
    return tableHash(readFileSync(join(masterRoot, PARTITION_TABLE)));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

// Why: the operator types names; each must be a node the master knows (a typo would approve nobody and leave the
// node waiting, silently), spelled as in nodes.list (the agent looks up approved/<its DHCP host name>).
export function approvalTargets(
  nodes: NodeEntry[],
  names: string[],
  o: { all?: boolean; force?: boolean } = {},
): { hosts: string[]; errors: string[] } {
  const errors: string[] = [];
  const hosts: string[] = [];
  const add = (h: string) => {
    if (!hosts.some((x) => x.toLowerCase() === h.toLowerCase())) hosts.push(h);
  };
  if (o.all) {
    if (nodes.length === 0) errors.push(`--all: no nodes in ${NODES_LIST}: run \`builder stage\` first`);
    for (const n of nodes) add(n.hostname);
  }
  for (const name of names) {
    const listed = nodes.find((n) => n.hostname.toLowerCase() === name.toLowerCase());
    if (listed) add(listed.hostname);
    else if (!LABEL_RE.test(name))
      errors.push(`'${name.replace(/[\x00-\x1f\x7f]/g, '?')}' is not a host name (an RFC 1123 label)`);
    else if (o.force) add(name);
    else
      errors.push(
        `${name} is not in ${NODES_LIST}: check the spelling (\`builder approve --list\` shows the nodes), or use --force to approve a name the master does not list`,
      );
  }
  if (!o.all && names.length === 0)
    errors.push(
      'name the nodes to approve (builder approve rpinode01 rpinode02), or --all, or --list to see what waits',
    );
  return { hosts, errors };
}

export interface ApproveResult {
  /** sha256 of the table approved. */
  hash: string;
  table: string;
  /** Hosts whose approval file was written, and those that already had this table approved. */
  approved: string[];
  already: string[];
  warnings: string[];
}

/** What `builder approve` refused; nothing was written. */
export class ApproveError extends Error {
  constructor(readonly problems: string[]) {
    super(
      problems.length === 1
        ? (problems[0] as string)
        : `${problems.length} problems, nothing approved:\n  - ${problems.join('\n  - ')}`,
    );
  }
}

function readNodes(stateDir: string): NodeEntry[] {
  const file = join(stateDir, NODES_LIST);
  try {
    return parseNodeList(readFileSync(file, 'utf8')).nodes;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

// Why: the effect of `builder approve`: every name checked first, then one atomic file per node, for the table the
// master has right now (a node that fetched an older table sees a hash that does not match, and keeps waiting).
export function approve(o: {
  masterRoot: string;
  /** Holds nodes.list (outside the master root). */
  stateDir: string;
  names: string[];
  all?: boolean;
  force?: boolean;
}): ApproveResult {
  const table = join(o.masterRoot, PARTITION_TABLE);
  const hash = readTableHash(o.masterRoot);
  const t = approvalTargets(readNodes(o.stateDir), o.names, {
    ...(o.all !== undefined ? { all: o.all } : {}),
    ...(o.force !== undefined ? { force: o.force } : {}),
  });
  const problems = [...t.errors];
  if (hash === null) problems.unshift(`no ${table}: there is no table to approve`);
  const dir = join(o.masterRoot, APPROVED_DIR);
  const dst = statSync(dir, { throwIfNoEntry: false });
  if (dst && !dst.isDirectory()) problems.push(`${dir} exists and is not a directory: move it away`);
  if (problems.length || hash === null) throw new ApproveError(problems);

  const warnings: string[] = [];
  if (!approvalModeOn(o.masterRoot)) {
    warnings.push(
      `approval mode is off (no ${join(o.masterRoot, APPROVAL_REQUIRED)}): nodes repartition without waiting; \`builder stage --approval\` turns it on`,
    );
  }
  if (!dst) {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    chmodSync(dir, 0o755);
  }
  const approved: string[] = [];
  const already: string[] = [];
  for (const h of t.hosts) {
    const file = approvalPath(o.masterRoot, h);
    let old: string | null = null;
    try {
      old = readFileSync(file, 'latin1');
    } catch {
      /* none yet */
    }
    if (old !== null && approvalState(old, hash) === 'approved') {
      already.push(h);
      continue;
    }
    writeAtomic(file, approvalText(hash), 0o644);
    approved.push(h);
  }
  return { hash, table, approved, already, warnings };
}
