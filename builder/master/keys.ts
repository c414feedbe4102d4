// `builder keys`: the node key, the report key and the stamp signing key, made once and never overwritten.
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const SSH_KEYGEN = '/usr/bin/ssh-keygen';

export interface Keys {
  nodeKey: string;
  nodeKeyPub: string;
  signKey: string;
  signKeyPub: string;
  /** OpenSSH key the nodes push their boot reports with (write-only into <master root>/reports). */
  reportKey: string;
  reportKeyPub: string;
}

// Why: one-time master setup; the node key (OpenSSH) lets nodes read the master, the report key (OpenSSH) lets them
// drop boot reports, the stamp key (PEM) signs stamps.
// Existing keys are never overwritten; a missing public half is re-derived from its private key; a key added in a
// later version (the report key) is created next to the existing ones on the next call.
export function generateKeys(dir: string): Keys {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  } else if (!statSync(dir).isDirectory()) {
    throw new Error(`generateKeys: ${dir} is not a directory`);
  }
  const nodeKey = join(dir, 'node_ed25519');
  const nodeKeyPub = `${nodeKey}.pub`;
  const reportKey = join(dir, 'report_ed25519');
  const reportKeyPub = `${reportKey}.pub`;
  const signKey = join(dir, 'stamp_ed25519.pem');
  const signKeyPub = join(dir, 'stamp_ed25519.pub.pem');

  const keygen = (args: string[]) => {
    const r = spawnSync(SSH_KEYGEN, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
    if (r.error) throw new Error(`generateKeys: cannot run ${SSH_KEYGEN}: ${r.error.message}`);
    if (r.status !== 0)
      throw new Error(`generateKeys: ssh-keygen ${args.join(' ')} exited with ${r.status}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const sshKey = (key: string, comment: string) => {
    const pub = `${key}.pub`;
    if (existsSync(key)) {
      if (!existsSync(pub)) writeFileSync(pub, keygen(['-y', '-f', key]), { mode: 0o644, flag: 'wx' });
    } else {
      if (existsSync(pub))
        throw new Error(`generateKeys: ${pub} exists without its private key ${key}; remove it or restore the key`);
      keygen(['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', key]);
    }
  };
  sshKey(nodeKey, 'clusterboot-node');
  sshKey(reportKey, 'clusterboot-report');

  if (existsSync(signKey)) {
    const priv = createPrivateKey(readFileSync(signKey, 'utf8'));
    if (priv.asymmetricKeyType !== 'ed25519')
      throw new Error(`generateKeys: ${signKey} is ${priv.asymmetricKeyType}, not ed25519`);
    if (!existsSync(signKeyPub)) {
      writeFileSync(signKeyPub, createPublicKey(priv).export({ type: 'spki', format: 'pem' }) as string, {
        mode: 0o644,
        flag: 'wx',
      });
    }
  } else {
    if (existsSync(signKeyPub))
      throw new Error(
        `generateKeys: ${signKeyPub} exists without its private key ${signKey}; remove it or restore the key`,
      );
    const k = generateKeyPairSync('ed25519');
    // private half first: if interrupted before the public half, the next call re-derives it
    writeFileSync(signKey, k.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, {
      mode: 0o600,
      flag: 'wx',
    });
    writeFileSync(signKeyPub, k.publicKey.export({ type: 'spki', format: 'pem' }) as string, {
      mode: 0o644,
      flag: 'wx',
    });
  }
  return { nodeKey, nodeKeyPub, signKey, signKeyPub, reportKey, reportKeyPub };
}
