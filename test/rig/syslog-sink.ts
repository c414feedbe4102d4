// The master's syslog for a virtual cluster: a UDP listener that appends each datagram as one line.
// Usage (inside the cluster's namespace): bun test/rig/syslog-sink.ts ADDRESS PORT FILE
import { appendFileSync, writeFileSync } from 'node:fs';

const [address = '0.0.0.0', port = '514', file = '/dev/stdout'] = process.argv.slice(2);
writeFileSync(file, '');
await Bun.udpSocket({
  hostname: address,
  port: Number(port),
  socket: {
    data(_s, data) {
      appendFileSync(file, `${Buffer.from(data).toString('utf8').replace(/\n/g, ' ')}\n`);
    },
  },
});
console.log(`syslog sink on ${address}:${port} -> ${file}`);
