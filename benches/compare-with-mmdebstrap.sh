#!/usr/bin/env bash
# Compares the tree of an `ami build` image with a reference built the
# conventional way: `mmdebstrap --mode=root` of exactly the same packages
# (maintainer scripts run in a chroot). Prints every difference that is not
# on the allow-list below, grouped; exits 1 if there is any.
#
# Usage: benches/compare-with-mmdebstrap.sh [WORK_DIR]
#
# Builds the default recipe with --layout pvgrub (the bare filesystem) from
# the host's apt sources, extracts the image with `debugfs -R rdump` (an
# independent ext4 reader), runs mmdebstrap with the package names from
# build.json and the same sources, then compares paths, types, modes,
# owners, symlink targets and file contents (SHA-256). Run as root.
#
# The allow-list (each entry says why the difference is expected):
#   /dev/...                 debugfs rdump does not extract device nodes;
#                            ami writes MAKEDEV's nodes itself (tested
#                            separately)
#   /etc/ssh/ssh_host_*      no host keys in an image, by design (made at
#                            first boot)
#   /etc/rc?.d/...           sysvinit start links; systemd does not use them
#   /etc/{passwd,group,shadow,gshadow}-, /etc/.pwd.lock, */*-old,
#   /var/lib/ucf/*.0         backup and lock files of the tools that ran
#   /var/cache/debconf/*     debconf's cache of answers and templates
#   /etc/ld.so.cache, /usr/lib/udev/hwdb.bin,
#   /var/lib/systemd/catalog/database
#                            generated at first boot (ldconfig, hwdb,
#                            journalctl --update-catalog) instead of on the
#                            build machine
#   /etc/mtab, /var/log/README, /var/{lib,cache,log}/private,
#   /var/lib/systemd/{coredump,pstore}, /run/lock/subsys
#                            systemd-tmpfiles creates them at every boot
#   /etc/resolv.conf, /etc/hostname, /etc/hosts, /etc/apt/sources.list,
#   /etc/machine-id          the reference copies them from the build host
#                            (ami writes its own, host-independent ones)
#   /var/cache/apt/..., /var/lib/apt/lists/...
#                            apt's working directories (apt fixes their
#                            owner and mode when it runs)
#   /root/.ssh, /etc/apparmor.d/local/sbin.dhclient
#                            empty placeholders made by scripts in the
#                            reference; nothing reads them before they exist
#   /etc/group, /etc/gshadow, /etc/passwd, /etc/shadow and the group of
#   /usr/bin/ssh-agent       dynamic system group ids depend on the order
#                            packages are configured in
#   ami's own configuration: /home/admin, /etc/sudoers.d/admin,
#   /etc/prep-instance*, /etc/systemd/system/..prep-instance.service,
#   /etc/ssh/sshd_config.d/ami.conf, /etc/fstab, /etc/network/interfaces,
#   /etc/apt/sources.list.d/debian.sources, /boot/grub, /boot/initrd.img-*
#   (native initramfs), /lost+found, /var/lib/dpkg/available
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /dev/shm/ami-compare.XXXXXX)}
die() { echo "error: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run this as root (mmdebstrap's root mode, rdump ownership)"
for tool in cargo debugfs mmdebstrap python3 apt-get; do command -v "$tool" >/dev/null || die "$tool not found"; done

(cd "$repo" && cargo build --release --locked -p ami-cli)
ami=${CARGO_TARGET_DIR:-$repo/target}/release/ami
mkdir -p "$work"
rm -rf "$work/out" "$work/ours" "$work/ref"
"$ami" build --layout pvgrub --out "$work/out" --source-date-epoch 1700000000
names=$(python3 -c 'import json,sys; print(",".join(p["name"] for p in json.load(open(sys.argv[1]))["packages"]))' "$work/out/build.json")
mapfile -t lines < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
    'Identifier: Packages' | sort -u | awk '$2 !~ /-backports$/ {
        k = $1 " " $2; if (!(k in c)) order[n++] = k; c[k] = c[k] " " $3 }
        END { for (i = 0; i < n; i++) print "deb " order[i] c[order[i]] }')
suite=$(printf '%s\n' "${lines[@]}" | awk '$3 !~ /-/ { print $3; exit }')
mmdebstrap --mode=root --variant=custom --include="$names" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "$suite" "$work/ref" "${lines[@]}" >"$work/mmdebstrap.log" 2>&1 \
    || { tail -20 "$work/mmdebstrap.log"; die "mmdebstrap failed"; }
mkdir -p "$work/ours"
debugfs -R "rdump / $work/ours" "$work/out/disk.img" >/dev/null 2>&1
# rdump drops setuid/setgid/sticky bits, so only the rwx bits are compared
# here (the special bits are checked by the build's own tests).
python3 - "$work" "$work/out/disk.img" <<'PY'
import hashlib, os, re, stat, sys
work, image = sys.argv[1], sys.argv[2]
ALLOW = [r"^/dev(/|$)", r"^/etc/ssh/ssh_host_", r"^/etc/rc[0-6S]\.d(/|$)",
         r"^/etc/(passwd|group|shadow|gshadow)-$", r"^/etc/\.pwd\.lock$", r"-old$",
         r"^/var/lib/ucf/.*\.0$", r"^/var/cache/debconf(/|$)", r"^/etc/ld\.so\.cache$",
         r"^/usr/lib/udev/hwdb\.bin$", r"^/var/lib/systemd/catalog(/|$)", r"^/etc/mtab$",
         r"^/var/log/README$", r"^/var/(lib|cache|log)/private$", r"^/var/lib/systemd/(coredump|pstore)$",
         r"^/run/lock/subsys$", r"^/etc/(resolv\.conf|hostname|hosts|machine-id)$",
         r"^/etc/apt/sources\.list$", r"^/var/cache/apt(/|$)", r"^/var/lib/apt/lists(/|$)",
         r"^/root/\.ssh$", r"^/etc/apparmor\.d/local(/|$)", r"^/etc/(group|gshadow|passwd|shadow)$",
         r"^/usr/bin/ssh-agent$", r"^/home/admin(/|$)", r"^/etc/sudoers\.d/admin$",
         r"^/etc/prep-instance", r"prep-instance\.service$", r"^/etc/ssh/sshd_config\.d/ami\.conf$",
         r"^/etc/fstab$", r"^/etc/network/interfaces$", r"^/etc/apt/sources\.list\.d/debian\.sources$",
         r"^/boot/grub(/|$)", r"^/boot/initrd\.img-", r"^/lost\+found$", r"^/var/lib/dpkg/available$"]
allow = [re.compile(a) for a in ALLOW]
def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n); rel = p[len(root):]
            st = os.lstat(p)
            info = [stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid]
            if stat.S_ISLNK(st.st_mode): info.append(os.readlink(p))
            elif stat.S_ISREG(st.st_mode): info.append(hashlib.sha256(open(p, "rb").read()).hexdigest())
            out[rel] = [info, st.st_mode & 0o7777]
    return out
ours, ref = walk(work + "/ours"), walk(work + "/ref")
bad = []
for p in sorted(set(ours) | set(ref)):
    if any(a.search(p) for a in allow):
        continue
    if p not in ours: bad.append(f"only in the reference: {p}")
    elif p not in ref: bad.append(f"only in ami's image: {p}")
    elif ours[p][0] != ref[p][0]: bad.append(f"differs: {p}: ami {ours[p][0][:3]} ref {ref[p][0][:3]}")
    elif ours[p][1] & 0o777 != ref[p][1] & 0o777: bad.append(f"mode differs: {p}: ami {oct(ours[p][1])} ref {oct(ref[p][1])}")
print(f"{len(ours)} paths in ami's image, {len(ref)} in the reference; {len(bad)} unexpected differences")
for b in bad: print("  " + b)
sys.exit(1 if bad else 0)
PY
