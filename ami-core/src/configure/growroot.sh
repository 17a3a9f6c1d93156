#!/bin/sh
# Grows the root partition and its ext4 filesystem to the end of the disk,
# for instances whose volume is larger than the image (written by ami).
# Idempotent: does nothing when there is less than 1 MiB to gain.
set -eu
log() { echo "growroot: $*"; }

dev=$(awk '$2 == "/" { d = $1 } END { print d }' /proc/self/mounts)
case "$dev" in
/dev/*) ;;
*) log "root is $dev, not a block device: nothing to do"; exit 0 ;;
esac
real=$(readlink -f "$dev")
name=${real##*/}
sys=/sys/class/block/$name
[ -e "$sys" ] || { log "no $sys: nothing to do"; exit 0; }

if [ -e "$sys/partition" ] && ! command -v sfdisk >/dev/null; then
    log "no sfdisk (package fdisk) in the image: the partition is not grown"
elif [ -e "$sys/partition" ]; then
    part=$(cat "$sys/partition")
    diskname=$(basename "$(readlink -f "$sys/..")")
    disk=/dev/$diskname
    disk_sectors=$(cat "/sys/class/block/$diskname/size")
    start=$(cat "$sys/start")
    size=$(cat "$sys/size")
    # Room left after the partition, less the 33 sectors of a backup GPT.
    free=$((disk_sectors - start - size - 33))
    if [ "$free" -lt 2048 ]; then
        log "$real already fills $disk"
    else
        log "growing partition $part of $disk by $((free / 2048)) MiB"
        # A disk bigger than the image: move the backup GPT to the end.
        sfdisk --relocate gpt-bak-std "$disk" >/dev/null 2>&1 || true
        echo ", +" | sfdisk --no-reread --no-tell-kernel -q -N "$part" "$disk"
        partx -u -n "$part" "$disk"
    fi
fi
before=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')
resize2fs "$real" 2>&1 | sed 's/^/growroot: /'
after=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')
if [ "$after" != "$before" ]; then
    log "grew $real from $before to $after bytes"
else
    log "$real: filesystem size unchanged ($after bytes)"
fi
