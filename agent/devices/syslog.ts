// syslog=host[:port]: every console message also goes to the master's syslog over UDP, from the moment
// the network is up (the messages before it are sent first, from the agent's history).
import type { udp } from 'bun';
import { lookup } from 'node:dns/promises';
import { events, humanLine, info, onEvent, uptime, warn, type Event } from '../log.ts';
import { formatSyslog, severityOf, syslogTarget } from '../plans/syslog.ts';
import type { Ctx } from '../phase.ts';

let socket: udp.Socket<'buffer'> | null = null;
let listening = false;

/** Start sending (no-op without syslog=). Never throws: a syslog problem is a warning, not a boot failure. */
export function startSyslog(ctx: Ctx): void {
  const value = ctx.params.syslog;
  if (!value || socket) return;
  const t = syslogTarget(value);
  if (!t) {
    warn('network', `syslog=${value}: expected host[:port]; no remote log`);
    return;
  }
  void (async () => {
    try {
      const address = /^\d+\.\d+\.\d+\.\d+$/.test(t.host) ? t.host : (await lookup(t.host, { family: 4 })).address;
      socket = await Bun.udpSocket({});
      const send = (e: Event & { t?: number }) => {
        if (!socket) return;
        const line = formatSyslog({
          severity: severityOf(e.kind),
          hostname: ctx.facts.hostname ?? null,
          uptime: e.t ?? 0,
          text: humanLine(e),
        });
        socket.send(line, t.port, address);
      };
      for (const e of events()) send(e);
      if (!listening) {
        listening = true;
        onEvent((e) => send({ ...e, t: uptime() }));
      }
      info('network', `console messages also go to syslog ${address}:${t.port} (UDP)`);
    } catch (err) {
      warn('network', `syslog=${value}: ${(err as Error).message}; no remote log`);
    }
  })();
}

/** Close the socket before the handoff: nothing of ours may leak into the real init. */
export function stopSyslog(): void {
  socket?.close();
  socket = null;
}
