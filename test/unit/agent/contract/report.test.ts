// The boot report and the syslog line are built by pure functions: what the master sees is decided here.
import { describe, expect, test } from 'bun:test';
import { buildReport, reportName, type ReportInput } from '../../../../agent/contract/report.ts';
import { formatSyslog, severityOf, syslogTarget } from '../../../../agent/plans/syslog.ts';

const base: ReportInput = {
  events: [],
  mac: '52:54:00:AA:00:01',
  hostname: 'node1',
  hostnameFrom: 'dhcp',
  ip: '10.77.0.11',
  agentVersion: '0.1.0',
  kernel: '6.1.0',
  result: 'ok',
  rootBefore: null,
  rootAfter: '1-x',
  masterRoot: '1-x',
  bytesReceived: 5,
  overlay: 'disk (overlay)',
  uptime: 9,
};

describe('buildReport', () => {
  test('each finished phase with its duration, in order; warnings and failures as errors', () => {
    const r = buildReport({
      ...base,
      events: [
        { kind: 'phase-start', phase: 'early', t: 1 },
        { kind: 'phase-done', phase: 'early', t: 1.5, seconds: 0.504, summary: 'PID 1' },
        { kind: 'phase-start', phase: 'master', t: 2 },
        { kind: 'warn', phase: 'master', t: 2.1, message: 'slow' },
        { kind: 'phase-done', phase: 'master', t: 4, seconds: 2 },
      ],
    });
    expect(r.phases).toEqual([
      { name: 'early', seconds: 0.5, summary: 'PID 1' },
      { name: 'master', seconds: 2 },
    ]);
    expect(r.errors).toEqual(['master: slow']);
    expect(r.mac).toBe('52:54:00:aa:00:01');
    expect(r.schema).toBe(1);
  });

  test('the phase a fatal boot stopped in is listed as failed, with the time it ran until the report', () => {
    const r = buildReport({
      ...base,
      result: 'fatal',
      reason: 'disk gone',
      uptime: 20,
      events: [
        { kind: 'phase-start', phase: 'disk', t: 12 },
        { kind: 'fatal', phase: 'disk', t: 19, error: 'disk gone' },
      ],
    });
    expect(r.phases).toEqual([{ name: 'disk', seconds: 8, failed: true }]);
    expect(r.errors).toEqual(['disk: disk gone']);
    expect(r.reason).toBe('disk gone');
  });

  test('a reboot request leaves its phase unfinished but not failed', () => {
    const r = buildReport({ ...base, result: 'reboot', events: [{ kind: 'phase-start', phase: 'partitions', t: 5 }] });
    expect(r.phases[0]).toEqual({ name: 'partitions', seconds: 4, failed: false });
  });

  test('errors and texts are bounded so a looping warning cannot make a huge report', () => {
    const events = Array.from({ length: 100 }, (_, i) => ({
      kind: 'warn',
      phase: 'root',
      t: i,
      message: 'x'.repeat(1000),
    }));
    const r = buildReport({ ...base, events, reason: 'y'.repeat(5000) });
    expect(r.errors.length).toBe(20);
    expect(r.errors[19]).toBe('… and 81 more');
    expect(r.errors[0]?.length).toBeLessThanOrEqual(400);
    expect(r.reason?.length).toBeLessThanOrEqual(400);
  });

  test('the master that served the boot and the ones failed over from; absent when none', () => {
    const r = buildReport({ ...base, events: [], master: '10.0.0.2', failover: ['10.0.0.9: master unreachable'] });
    expect([r.master, r.failover]).toEqual(['10.0.0.2', ['10.0.0.9: master unreachable']]);
    const plain = buildReport({ ...base, events: [], failover: [] });
    expect(['master' in plain, 'failover' in plain]).toEqual([false, false]);
  });

  test('the enrolment key travels as its public half only, and only when it is one ed25519 key', () => {
    const key = `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${'Q'.repeat(43)}`;
    expect(buildReport({ ...base, events: [], enrolKey: key }).enrolKey).toBe(key);
    for (const bad of [`${key} comment`, '-----BEGIN OPENSSH PRIVATE KEY-----', `ssh-rsa ${'A'.repeat(68)}`])
      expect('enrolKey' in buildReport({ ...base, events: [], enrolKey: bad })).toBe(false);
  });

  test('report file names come from the MAC and contain no path separators', () => {
    expect(reportName('52:54:00:AA:00:01')).toBe('52-54-00-aa-00-01.json');
    expect(reportName('unknown')).toBe('unknown.json');
  });
});

describe('syslog', () => {
  test('targets: host, host:port, and refusals', () => {
    expect(syslogTarget('10.77.0.1')).toEqual({ host: '10.77.0.1', port: 514 });
    expect(syslogTarget('master.lan:5514')).toEqual({ host: 'master.lan', port: 5514 });
    expect(syslogTarget('10.0.0.1:0')).toBeNull();
    expect(syslogTarget('a b')).toBeNull();
    expect(syslogTarget('host:99999')).toBeNull();
  });

  test('RFC 5424 line: daemon facility, severity from the event, no timestamp (no clock), the uptime in the text', () => {
    const l = formatSyslog({ severity: severityOf('warn'), hostname: 'node1', uptime: 3.14159, text: 'disk slow' });
    expect(l).toBe('<28>1 - node1 clusterboot - - - 3.14s disk slow');
    expect(formatSyslog({ severity: severityOf('fatal'), hostname: null, uptime: 0, text: 'x' })).toStartWith(
      '<27>1 - - clusterboot',
    );
    expect(severityOf('info')).toBe('info');
    expect(severityOf('phase-done')).toBe('notice');
  });

  test('control characters cannot forge a second line, and a long message is cut under 1 KiB', () => {
    const l = formatSyslog({ severity: 'info', hostname: 'n', uptime: 1, text: 'a\nfake line\r\n\x00b' });
    expect(l).not.toMatch(/[\r\n\x00]/);
    expect(l).toEndWith('a fake line b');
    const long = formatSyslog({ severity: 'info', hostname: 'n', uptime: 1, text: 'é'.repeat(2000) });
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(1024);
    expect(long).toEndWith('...');
  });

  test('a hostname with spaces is not trusted into the header', () => {
    expect(formatSyslog({ severity: 'info', hostname: 'bad host', uptime: 1, text: 't' })).toStartWith(
      '<30>1 - - clusterboot',
    );
  });
});

describe('memory line', () => {
  test('reads VmHWM, VmRSS, Shmem and MemAvailable in MB; a missing field shows ?', async () => {
    const { memoryLine } = await import('../../../../agent/phases/handoff.ts');
    const l = memoryLine(
      'Name:\tx\nVmHWM:\t  102400 kB\nVmRSS:\t   51200 kB\n',
      'MemTotal:  1024000 kB\nMemAvailable:  512000 kB\nShmem:  140000 kB\n',
    );
    expect(l).toBe(
      'memory: agent peak 100.0 MB (VmHWM), now 50.0 MB; initramfs and /run hold 136.7 MB (Shmem); 500.0 MB available of 1000.0 MB',
    );
    expect(memoryLine('', '')).toContain('agent peak ? (VmHWM)');
  });
});
