#!/bin/sh
# Reference init for the benchmarks: the seed's "Cluster boot" flow in plain busybox sh, packed by
# bench/reference.ts as /init in place of the agent (same tools, modules, skeleton and keys).
# A yardstick, not a product: no slots, no approval, no signatures, no retries, no watchdog, one SSH
# handshake per rsync (as the seed). On any failure it prints "refinit: FAILED <step>" and drops to a shell.
#
# Console: one line per step, "refinit: <uptime>s <phase> <what>", phases named like the agent's.
# The benchmark reads "refinit: <t>s switch_root" (last line before the handoff) and
# "refinit: <t>s rsync done bytes=<N>" (after the root rsync; N from rsync --stats "Total bytes received").
#
# Kernel parameters: masterip= (else DHCP option 66, next-server, then the DHCP server, as the agent),
# masterport= (22), disk= (/dev/mmcblk0), aufs= / overlay= (disk | tmpfs | none).

B=/bin/busybox
RSYNC=/usr/bin/rsync
SSH=/usr/bin/ssh
SFDISK=/sbin/sfdisk
MKE2FS=/sbin/mke2fs
MKFAT=/sbin/mkfs.fat
KEYDIR=/etc/clusterboot
RUN=/run/clusterboot
LOWER=$RUN/lower
RW=$RUN/rw
BOOT=$RUN/boot
NEWROOT=/newroot
STAMP=.clusterboot-ref-stamp
PATH=/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
export PATH HOME

log() {
  t=0.00
  if [ -r /proc/uptime ]; then read -r t _ < /proc/uptime; fi
  echo "refinit: ${t}s $*"
}

# fail STEP [WHY]: say so, then a shell forever (PID 1 must not exit).
fail() {
  [ -n "$2" ] && echo "refinit: $1: $2"
  echo "refinit: FAILED $1"
  while :; do $B sh; done
}

mounted() {
  $B grep -q " $1 " /proc/mounts 2>/dev/null
}

# wait_block DEV TENTHS: wait until DEV is a block device, polling every 0.2 s.
wait_block() {
  _n=0
  while [ ! -b "$1" ]; do
    _n=$((_n + 2))
    [ "$_n" -gt "$2" ] && return 1
    $B usleep 200000
  done
  return 0
}

# An sfdisk dump (either dialect) -> "start size type" per used partition, sorted: what the seed compares.
norm() {
  # shellcheck disable=SC2016 # an awk program: its $ are awk's
  $B awk '
    /start=/ {
      line = $0
      if (match(line, /^[^=]*:/)) line = substr(line, RLENGTH + 1)
      n = split(line, f, ",")
      s = ""; z = ""; t = ""
      for (i = 1; i <= n; i++) {
        g = f[i]; gsub(/[ \t\r]/, "", g)
        if (g ~ /^start=/) s = substr(g, 7)
        else if (g ~ /^size=/) z = substr(g, 6)
        else if (g ~ /^(type|Id)=/) { t = g; sub(/^[^=]*=/, "", t) }
      }
      t = tolower(t); sub(/^0x/, "", t); sub(/^0+/, "", t)
      if (z == "0" || z == "" || t == "") next
      print s, z, t
    }' "$1" | $B sort
}

# rsync --stats output -> the number after "Total bytes received:" (thousands separators dropped).
received_bytes() {
  # shellcheck disable=SC2016 # an awk program: its $ are awk's
  $B awk '/^Total bytes received:/ { gsub(/[,.]/, "", $4); print $4 }' "$1"
}

# ---- early: kernel filesystems, command line ----
mounted /proc || $B mount -t proc proc /proc || fail early "cannot mount /proc"
mounted /sys || $B mount -t sysfs sysfs /sys || fail early "cannot mount /sys"
mounted /dev || $B mount -t devtmpfs -o mode=0755 devtmpfs /dev || fail early "cannot mount /dev"
mounted /run || $B mount -t tmpfs -o mode=0755 tmpfs /run || fail early "cannot mount /run"
$B mkdir -p "$RUN" /tmp
log "early mounted /proc /sys /dev /run"

MASTER=
PORT=22
DISK=/dev/mmcblk0
AUFS=disk
read -r CMDLINE < /proc/cmdline
set -f
for w in $CMDLINE; do
  case $w in
    masterip=*) MASTER=${w#masterip=} ;;
    masterport=*) PORT=${w#masterport=} ;;
    disk=*) DISK=${w#disk=} ;;
    aufs=* | overlay=*) AUFS=${w#*=} ;;
  esac
done
set +f
case $PORT in '' | *[!0-9]*) fail early "masterport=$PORT is not a port number" ;; esac
case $AUFS in disk | tmpfs | none) ;; *) fail early "aufs=$AUFS: use disk, tmpfs or none" ;; esac
case $DISK in /dev/*) ;; *) fail early "disk=$DISK is not a /dev path" ;; esac
log "early parameters: master=${MASTER:-(from DHCP)} port=$PORT disk=$DISK overlay=$AUFS"

# ---- modules: the packed list, dependencies first, skipping what is already there ----
KVER=$($B uname -r)
loaded=0
failed=0
if [ -r "$KEYDIR/modules.list" ]; then
  while read -r rel; do
    case $rel in '' | '#'*) continue ;; esac
    base=${rel##*/}
    base=${base%%.ko*}
    name=
    rest=$base
    while :; do # /sys/module names use _ where file names may use -
      case $rest in
        *-*) name=$name${rest%%-*}_; rest=${rest#*-} ;;
        *) name=$name$rest; break ;;
      esac
    done
    [ -d "/sys/module/$name" ] && continue
    if $B insmod "/lib/modules/$KVER/$rel"; then
      loaded=$((loaded + 1))
    else
      failed=$((failed + 1))
      log "modules warning: could not load $base"
    fi
  done < "$KEYDIR/modules.list"
fi
log "modules loaded $loaded, failed $failed (kernel $KVER)"

# ---- network: the first wired interface, DHCP with the skeleton's hook ----
$B ip link set lo up
IF=
tries=0
while [ -z "$IF" ]; do
  other=
  for p in /sys/class/net/*; do
    n=${p##*/}
    case $n in
      '*' | lo | sit* | tun* | tap* | wl* | bond* | dummy* | ip6*) ;;
      eth* | en*) [ -z "$IF" ] && IF=$n ;;
      *) [ -z "$other" ] && other=$n ;;
    esac
  done
  [ -z "$IF" ] && IF=$other
  [ -n "$IF" ] && break
  tries=$((tries + 1))
  [ "$tries" -gt 75 ] && fail network "no network interface appeared within 15 s"
  $B usleep 200000
done
$B ip link set "$IF" up || fail network "cannot bring $IF up"
log "network DHCP on $IF"
$B udhcpc -i "$IF" -f -q -n -t 8 -T 3 -A 2 -s /etc/udhcpc/default.script -O tftp || fail network "no DHCP lease on $IF"
[ -r "$RUN/lease.env" ] || fail network "the DHCP hook wrote no $RUN/lease.env"
L_IP='' L_MASK='' L_SERVER='' L_SIADDR='' L_TFTP='' L_HOST=''
while IFS= read -r kv; do
  v=${kv#*=}
  case ${kv%%=*} in
    ip) L_IP=$v ;;
    mask) L_MASK=$v ;;
    serverid) L_SERVER=$v ;;
    siaddr) L_SIADDR=$v ;;
    tftp) L_TFTP=$v ;;
    hostname) L_HOST=$v ;;
  esac
done < "$RUN/lease.env"
[ -n "$L_HOST" ] && $B hostname "$L_HOST"
FROM=masterip=
if [ -z "$MASTER" ]; then
  if [ -n "$L_TFTP" ]; then
    MASTER=$L_TFTP FROM='DHCP option 66'
  elif [ -n "$L_SIADDR" ] && [ "$L_SIADDR" != 0.0.0.0 ]; then
    MASTER=$L_SIADDR FROM='DHCP next-server'
  else
    MASTER=$L_SERVER FROM='DHCP server'
  fi
fi
[ -n "$MASTER" ] || fail network "no master known: give masterip= on the kernel command line"
log "network lease $L_IP/$L_MASK on $IF, hostname ${L_HOST:-(none)}, master $MASTER ($FROM)"

# ---- master: the wanted table (rsync over ssh; the node key may only run rrsync -ro on the master) ----
# The same ssh options as the agent's sshOptions(), minus its shared ControlMaster connection.
RSH="$SSH -F /dev/null -i $KEYDIR/node_key -p $PORT -l root -o IdentitiesOnly=yes -o UserKnownHostsFile=$KEYDIR/known_hosts"
RSH="$RSH -o GlobalKnownHostsFile=/dev/null -o HostKeyAlias=clusterboot-master -o StrictHostKeyChecking=yes -o BatchMode=yes"
RSH="$RSH -o ConnectTimeout=10 -o ServerAliveInterval=10 -o ServerAliveCountMax=3"
RSH="$RSH -o Ciphers=chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes128-ctr -o LogLevel=ERROR"
M=root@$MASTER
log "master fetching partitions.sfdisk from $MASTER:$PORT"
$B rm -f /tmp/partitions.sfdisk /tmp/rootfs.stamp # never compare with a leftover
$RSYNC -e "$RSH" "$M:partitions.sfdisk" /tmp/ || fail master "rsync of partitions.sfdisk from $MASTER failed"
log "master table fetched"

# ---- disk / partitions: compare start/size/type only, as the seed; rewrite, format, fill p1, reboot ----
wait_block "$DISK" 300 || fail disk "$DISK did not appear within 30 s"
case $DISK in *[0-9]) P=${DISK}p ;; *) P=$DISK ;; esac
norm /tmp/partitions.sfdisk > /tmp/wanted.norm
[ -s /tmp/wanted.norm ] || fail partitions "the master's partitions.sfdisk lists no partition"
$SFDISK -d "$DISK" > /tmp/current.sfdisk 2> /dev/null || : > /tmp/current.sfdisk
norm /tmp/current.sfdisk > /tmp/current.norm
if ! $B cmp -s /tmp/wanted.norm /tmp/current.norm; then
  log "partitions table change: writing $DISK"
  $SFDISK -q --wipe-partitions never "$DISK" < /tmp/partitions.sfdisk || fail partitions "sfdisk refused the table"
  for n in 1 2 3; do
    wait_block "$P$n" 100 || fail partitions "$P$n did not appear after writing the table"
  done
  log "partitions formatting ${P}1 as vfat (boot)"
  $MKFAT -n BOOT "${P}1" > /dev/null || fail partitions "mkfs.fat ${P}1 failed"
  log "partitions formatting ${P}2 as ext4 (root)"
  $MKE2FS -t ext4 -F -q -L cb-root -E lazy_itable_init=1,lazy_journal_init=1 "${P}2" || fail partitions "mke2fs ${P}2 failed"
  log "partitions formatting ${P}3 as ext4 (writable)"
  $MKE2FS -t ext4 -F -q -L cb-rw -E lazy_itable_init=1,lazy_journal_init=1 "${P}3" || fail partitions "mke2fs ${P}3 failed"
  $B mkdir -p "$BOOT"
  $B mount -t vfat "${P}1" "$BOOT" || fail bootfs "cannot mount ${P}1"
  log "bootfs filling ${P}1 from $MASTER:bootfs/"
  $RSYNC -e "$RSH" -rt --modify-window=2 "$M:bootfs/" "$BOOT/" || fail bootfs "rsync of bootfs/ failed"
  $B umount "$BOOT"
  $B sync
  log "reboot new partition table written"
  $B reboot -f
  fail reboot "reboot -f returned"
fi
log "partitions table unchanged"

# ---- root: the stamp decides; rsync the whole template into p2 when it moved ----
$RSYNC -e "$RSH" "$M:stamps/rootfs.stamp" /tmp/ || fail root "rsync of stamps/rootfs.stamp from $MASTER failed"
ID=$($B sed -n 's/^id //p' /tmp/rootfs.stamp)
$B mkdir -p "$LOWER"
$B mount -t ext4 "${P}2" "$LOWER" || fail root "cannot mount ${P}2"
if $B cmp -s /tmp/rootfs.stamp "$LOWER/$STAMP"; then
  log "root up to date (stamp ${ID:-?})"
else
  log "root stamp ${ID:-?} differs from the local copy: syncing $MASTER:rootfs/ into ${P}2"
  # forget the old stamp first: an interrupted rsync must be redone at the next boot
  $B rm -f "$LOWER/$STAMP"
  $B sync
  if ! $RSYNC -e "$RSH" -aHAX --numeric-ids --delete --stats "--exclude=/$STAMP" --exclude=/lost+found \
    "$M:rootfs/" "$LOWER/" > /tmp/rsync.log 2>&1; then
    $B tail -n 20 /tmp/rsync.log
    fail root "rsync of rootfs/ failed"
  fi
  BYTES=$(received_bytes /tmp/rsync.log)
  $B cp /tmp/rootfs.stamp "$LOWER/$STAMP" || fail root "cannot store the stamp"
  $B sync
  log "rsync done bytes=${BYTES:-0}"
fi

# ---- overlay: p2 read-only under a writable layer on p3 (aufs=disk) or tmpfs; none: p2 read-write ----
$B mkdir -p "$RW" "$NEWROOT"
if [ "$AUFS" = none ]; then
  $B mount --bind "$LOWER" "$NEWROOT" || fail overlay "cannot bind ${P}2 at $NEWROOT"
  log "overlay none: ${P}2 read-write at $NEWROOT"
else
  $B mount -o remount,ro "$LOWER" || fail overlay "cannot remount ${P}2 read-only"
  if [ "$AUFS" = tmpfs ]; then
    $B mount -t tmpfs -o mode=0755 tmpfs "$RW" || fail overlay "cannot mount a tmpfs at $RW"
  else
    $B mount -t ext4 -o noatime "${P}3" "$RW" || fail overlay "cannot mount ${P}3"
  fi
  $B mkdir -p "$RW/upper" "$RW/work"
  $B mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$RW/upper,workdir=$RW/work" "$NEWROOT" || fail overlay "cannot mount the overlay"
  log "overlay $AUFS: ${P}2 read-only under $RW/upper"
fi

# ---- handoff: move the kernel filesystems (and /run, with the layers) into the new root ----
for m in dev proc sys run; do $B mkdir -p "$NEWROOT/$m"; done
log "switch_root"
for m in /run /sys /dev /proc; do
  $B mount --move "$m" "$NEWROOT$m" || fail handoff "cannot move $m into $NEWROOT"
done
exec $B switch_root "$NEWROOT" /sbin/init
