// What the master's dnsmasq and the node's udhcpc agree on beyond the standard options: the node's masters.
// Option 66 carries one host for the agent (udhcpc turns anything that is not one valid host name into "bad"),
// so a node with its own master (a mirror) gets the ordered list in a site-specific option (RFC 3942: 224-254).

/** The DHCP option with the node's masters, most preferred first, comma-separated ("10.77.0.2,10.77.0.1"). */
export const MASTERS_OPTION = 224;

/** The udhcpc hook's line for it: busybox exports an option it has no name for as optNNN=<hex of its bytes>. */
export const MASTERS_LEASE_KEY = 'masters';

/** optNNN's hex back to the text the master sent; '' for anything that is not even-length hex of printable ASCII. */
export function mastersFromHex(hex: string): string {
  if (!/^(?:[0-9a-fA-F]{2}){1,256}$/.test(hex)) return '';
  const text = Buffer.from(hex, 'hex').toString('latin1');
  return /^[\x21-\x7e]+$/.test(text) ? text : '';
}
