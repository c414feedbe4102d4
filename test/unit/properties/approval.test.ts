// Property 4: an existing table is only touched with an approval of exactly its bytes (runner.ts: seeds, replay).
import { describe } from 'bun:test';
import { tableHash } from '../../../agent/contract/approval.ts';
import { approvalGate, type GateFacts } from '../../../agent/plans/approval.ts';
import { damage, genModelTable, must, propertyRunner, renderModel } from './runner.ts';

const property = propertyRunner(import.meta.path);

describe('property 4: approvalGate', () => {
  property(
    'with approval required and a table on the disk, proceed only when approvedHash === wantedHash',
    (r) => {
      const table = renderModel(r, genModelTable(r, 8388608), '/dev/mmcblk0', 'new');
      const wantedHash = r.chance(0.05) ? r.pick(['', 'x', tableHash('')]) : tableHash(table);
      const edited = r.chance(0.5) ? table : damage(r, table);
      const approvedHash = r.pick([
        null,
        null,
        tableHash(table),
        tableHash(edited),
        wantedHash.toUpperCase(),
        `${wantedHash}\n`,
        ` ${wantedHash}`,
        wantedHash.slice(0, 63),
        `${wantedHash.slice(0, 63)}${wantedHash.endsWith('0') ? '1' : '0'}`,
        '',
        r.hex(64),
        tableHash(`${table}\n`),
        tableHash(table.replace(/\n/g, '\r\n')),
      ]);
      const f: GateFacts = {
        required: r.chance(0.8),
        approvedHash,
        wantedHash,
        hasTable: r.chance(0.8),
        hasRoot: r.chance(0.6),
        hostname: r.chance(0.9) ? `node${r.int(20)}` : null,
      };
      return { f, table, edited };
    },
    ({ f }) => {
      const g = approvalGate(f);
      must(['proceed', 'boot-current', 'wait'].includes(g.action), 'an action among proceed/boot-current/wait');
      must(g.reason.length > 0, 'a reason');
      if (f.required && f.hasTable && g.action === 'proceed')
        must(
          f.approvedHash !== null && f.approvedHash === f.wantedHash,
          'proceed over a table only with the approval of exactly this table',
        );
      if (f.required && f.hasTable && f.approvedHash === f.wantedHash)
        must(g.action === 'proceed', 'an exact approval proceeds');
      if (g.action === 'proceed' && g.approved)
        must(f.approvedHash === f.wantedHash, 'approved means the hashes match');
      if (g.action === 'boot-current') must(f.hasRoot, 'boot-current only with a root to boot');
      if (g.action === 'wait')
        must(!f.hasRoot && f.required && f.hasTable, 'wait only when approval is pending and there is no root');
      if (!f.required || !f.hasTable) must(g.action === 'proceed', 'no approval needed: proceed');
    },
    {
      classify: ({ f }) => `${approvalGate(f).action}${f.required && f.hasTable ? '-gated' : ''}`,
      cover: { 'proceed-gated': 100, 'boot-current-gated': 300, 'wait-gated': 150, proceed: 300 },
    },
  );

  property(
    'the approval is for the exact bytes: any edit of the approved table needs a new approval',
    (r) => {
      const table = renderModel(r, genModelTable(r, 8388608), '/dev/mmcblk0', r.pick(['new', 'unnamed']));
      const approved = r.chance(0.3)
        ? table
        : r.chance(0.5)
          ? damage(r, table)
          : renderModel(r, genModelTable(r, 8388608), '/dev/mmcblk0', 'new');
      return { table, approved };
    },
    ({ table, approved }) => {
      const g = approvalGate({
        required: true,
        approvedHash: tableHash(approved),
        wantedHash: tableHash(table),
        hasTable: true,
        hasRoot: true,
        hostname: 'n1',
      });
      must(
        (g.action === 'proceed') === (approved === table),
        `proceed iff the approved text is the wanted text byte for byte (got ${g.action})`,
      );
    },
    { classify: ({ table, approved }) => (table === approved ? 'same' : 'edited'), cover: { same: 300, edited: 800 } },
  );
});
