import { describe, expect, test } from 'bun:test';
import { moduleClosure, moduleName, parseModulesBuiltin, parseModulesDep } from '../../../../builder/image/kmod.ts';

const depText = `kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/lib/crc16.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz:
kernel/drivers/net/usb/smsc95xx.ko.zst: kernel/drivers/net/usb/usbnet.ko.zst kernel/drivers/net/phy/libphy.ko.zst kernel/drivers/net/mii.ko.zst
kernel/drivers/net/usb/usbnet.ko.zst: kernel/drivers/net/mii.ko.zst
kernel/drivers/net/phy/libphy.ko.zst:
kernel/drivers/net/mii.ko.zst:
kernel/drivers/net/usb/lan78xx.ko.zst: kernel/drivers/net/phy/libphy.ko.zst kernel/drivers/net/mii.ko.zst
kernel/drivers/net/usb/asix.ko: kernel/drivers/net/usb/usbnet.ko.zst kernel/drivers/net/mii.ko.zst
`;

const builtinText = `kernel/drivers/gpio/gpio-pl061.ko
kernel/fs/nfs/nfs.ko
`;

describe('parseModulesDep', () => {
  test('maps each module path to its dependencies in file order', () => {
    const dep = parseModulesDep(
      'kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\nkernel/lib/crc16.ko:\n',
    );
    expect([...dep]).toEqual([
      ['kernel/fs/ext4/ext4.ko', ['kernel/lib/crc16.ko', 'kernel/fs/mbcache.ko', 'kernel/fs/jbd2/jbd2.ko']],
      ['kernel/lib/crc16.ko', []],
    ]);
  });

  test('rejects a line without a colon', () => {
    expect(() => parseModulesDep('kernel/x.ko\n')).toThrow('malformed line');
  });
});

describe('moduleName', () => {
  test('strips directory and (compressed) .ko suffix and normalises dashes', () => {
    expect(
      ['kernel/fs/ext4/ext4.ko.xz', 'a/gpio-pl061.ko', 'b/snd-soc-core.ko.zst', 'c/x.ko.gz', 'ext4', 'spi-bcm2835'].map(
        moduleName,
      ),
    ).toEqual(['ext4', 'gpio_pl061', 'snd_soc_core', 'x', 'ext4', 'spi_bcm2835']);
  });
});

describe('parseModulesBuiltin', () => {
  test('returns the normalised names of built-in modules', () => {
    expect([...parseModulesBuiltin(builtinText)].sort()).toEqual(['gpio_pl061', 'nfs']);
  });
});

describe('moduleClosure', () => {
  const dep = parseModulesDep(depText);

  test('ext4 loads its dependencies in modprobe order (reverse of the list) first', () => {
    expect(moduleClosure(dep, ['ext4'])).toEqual({
      order: [
        'kernel/fs/jbd2/jbd2.ko.xz',
        'kernel/fs/mbcache.ko.xz',
        'kernel/lib/crc16.ko.xz',
        'kernel/fs/ext4/ext4.ko.xz',
      ],
      missing: [],
      builtin: [],
    });
  });

  test('diamond dependencies appear once, each after everything it needs', () => {
    expect(moduleClosure(dep, ['smsc95xx', 'lan78xx', 'asix']).order).toEqual([
      'kernel/drivers/net/mii.ko.zst',
      'kernel/drivers/net/phy/libphy.ko.zst',
      'kernel/drivers/net/usb/usbnet.ko.zst',
      'kernel/drivers/net/usb/smsc95xx.ko.zst',
      'kernel/drivers/net/usb/lan78xx.ko.zst',
      'kernel/drivers/net/usb/asix.ko',
    ]);
  });

  test('unknown modules are missing and built-in ones are reported as built in', () => {
    const builtin = parseModulesBuiltin(builtinText);
    expect(moduleClosure(dep, ['gpio-pl061', 'no-such-mod', 'jbd2', 'nfs', 'no_such_mod'], builtin)).toEqual({
      order: ['kernel/fs/jbd2/jbd2.ko.xz'],
      missing: ['no_such_mod'],
      builtin: ['gpio_pl061', 'nfs'],
    });
  });

  test('a built-in module is missing when no built-in list is given', () => {
    expect(moduleClosure(dep, ['gpio_pl061'])).toEqual({ order: [], missing: ['gpio_pl061'], builtin: [] });
  });

  test('a dependency cycle is an error', () => {
    const cyclic = parseModulesDep('a.ko: b.ko\nb.ko: a.ko\n');
    expect(() => moduleClosure(cyclic, ['a'])).toThrow('dependency cycle');
  });
});
