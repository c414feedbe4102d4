import { expect, test } from 'bun:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderParamTable } from '../../../agent/cmdline.ts';

// The consecutive `|` lines after the heading, stopping at the next section so a missing table cannot match later text.
function tableUnder(markdown: string, heading: string): string {
  const lines = markdown.split(/\r?\n/);
  const start = lines.indexOf(heading);
  if (start < 0) return '';
  const table: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith('|')) table.push(line);
    else if (table.length > 0 || line.startsWith('#')) break;
  }
  return table.join('\n');
}

test('the README kernel parameter table is the one cmdline.ts renders (edit the table in agent/cmdline.ts)', () => {
  const readme = readFileSync(join(import.meta.dir, '../../../README.md'), 'utf8');
  expect(tableUnder(readme, '## Kernel parameters')).toBe(renderParamTable());
});
