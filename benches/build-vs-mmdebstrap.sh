#!/usr/bin/env bash
# `ami build` of the default recipe against the conventional way to make the
# same root filesystem: `mmdebstrap` in root mode (maintainer scripts run in
# a chroot) of the same package set, then `mke2fs -d` of the tree into an
# image of the same size. Same machine, same mirror, warm package caches,
# alternating runs.
#
# Usage: benches/build-vs-mmdebstrap.sh [RUNS (default 3)]
#
# The sources are the host's apt sources (ami's default; mmdebstrap gets the
# same lines, from `apt-get indextargets`). ami resolves the default recipe;
# its package names (build.json) go to `mmdebstrap --variant=custom
# --include=...`, so both install exactly the same packages. ami's layout
# is `pvgrub` (a bare ext4 filesystem, like mke2fs's output) and also, in a
# second column, the default `uefi` (GPT, ESP, initramfs included).
#
# Each run is timed with /usr/bin/time (wall seconds, peak RSS of the
# largest process); work happens in AMI_BENCH_DIR (default /dev/shm).
# Prints every run, the medians and the ratio; exits 1 if ami is not at
# least 3x faster than mmdebstrap + mke2fs (the requirement) and says
# whether the 15 s aim was met. Run it as root (mmdebstrap's root mode).
set -euo pipefail

runs=${1:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${AMI_BENCH_DIR:-/dev/shm}
die() { echo "error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run this as root (mmdebstrap's root mode needs it)"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not $runs"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >/dev/null
for tool in cargo mke2fs apt-get python3; do command -v "$tool" >/dev/null || die "$tool not found"; done

echo "== building ami (release)"
(cd "$repo" && cargo build --release --locked -p ami-cli)
ami=${CARGO_TARGET_DIR:-$repo/target}/release/ami

work=$(mktemp -d "$bench_dir/ami-build-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
ami_cache=$work/ami-cache
mm_cache=$work/mm-cache
mkdir -p "$mm_cache"

# The host's sources as one-line entries for mmdebstrap (backports left
# out, as ami does).
mapfile -t lines < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
    'Identifier: Packages' | sort -u | awk '$2 !~ /-backports$/ {
        k = $1 " " $2; if (!(k in c)) order[n++] = k; c[k] = c[k] " " $3 }
        END { for (i = 0; i < n; i++) print "deb " order[i] c[order[i]] }')
[[ ${#lines[@]} -gt 0 ]] || die "the host's apt configuration has no sources (run apt-get update)"
suite=$(printf '%s\n' "${lines[@]}" | awk '$3 !~ /-/ { print $3; exit }')

measure() { # NAME COMMAND...: sets $secs and $rss_mb
    local name=$1 status=0
    shift
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "$name failed (exit status $status):" >&2
        tail -n 30 "$work/err" >&2
        exit 1
    fi
    read -r secs rss_kb <"$work/time"
    rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.0f", k / 1024 }')
}
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

run_conventional() {
    rm -rf "$work/mm" "$work/mm.img"
    mmdebstrap --mode=root --variant=custom --include="$names" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
        --setup-hook="sync-in $mm_cache /var/cache/apt/archives/" \
        --customize-hook="sync-out /var/cache/apt/archives $mm_cache" \
        "$suite" "$work/mm" "${lines[@]}"
    mke2fs -q -t ext4 -L rootfs -d "$work/mm" "$work/mm.img" "$size_kib"k
}
export -f run_conventional
export work mm_cache suite

echo "== warm-up (fills both caches)"
measure ami "$ami" build --cache "$ami_cache" --layout pvgrub --out "$work/ami" --source-date-epoch 1700000000
names=$(python3 -c 'import json,sys; print(",".join(p["name"] for p in json.load(open(sys.argv[1]))["packages"]))' "$work/ami/build.json")
size_kib=$(( $(stat -c %s "$work/ami/disk.img") / 1024 ))
count=$(tr ',' '\n' <<<"$names" | wc -l)
export names size_kib
lines_str=$(printf '%q ' "${lines[@]}")
export lines_str
printf '   %-14s %6ss  (%s packages, %s KiB image)\n' ami "$secs" "$count" "$size_kib"
measure conventional bash -c 'eval "lines=($lines_str)"; run_conventional'
printf '   %-14s %6ss\n' mmdebstrap+mke2fs "$secs"
echo

declare -A t rss
tools=(ami-pvgrub ami-uefi mmdebstrap+mke2fs)
printf '%-4s %-18s %9s %10s\n' run tool seconds "peak MB"
for ((run = 1; run <= runs; run++)); do
    for tool in "${tools[@]}"; do
        case $tool in
        ami-pvgrub) measure "$tool" "$ami" build --cache "$ami_cache" --layout pvgrub --out "$work/ami" --source-date-epoch 1700000000 ;;
        ami-uefi) measure "$tool" "$ami" build --cache "$ami_cache" --layout uefi --out "$work/ami-uefi" --source-date-epoch 1700000000 ;;
        mmdebstrap+mke2fs) measure "$tool" bash -c 'eval "lines=($lines_str)"; run_conventional' ;;
        esac
        t[$tool]+="$secs "
        rss[$tool]+="$rss_mb "
        printf '%-4s %-18s %9s %10s\n' "$run" "$tool" "$secs" "$rss_mb"
    done
done

echo
echo "== medians of $runs runs ($count packages)"
declare -A med
for tool in "${tools[@]}"; do
    # shellcheck disable=SC2086
    med[$tool]=$(median ${t[$tool]})
    # shellcheck disable=SC2086
    printf '%-18s %9s s %8s MB\n' "$tool" "${med[$tool]}" "$(median ${rss[$tool]})"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b > 0 ? a / b : 0) }'; }
echo
r=$(ratio "${med[mmdebstrap+mke2fs]}" "${med[ami-pvgrub]}")
echo "== mmdebstrap+mke2fs / ami build (pvgrub): ${r}x; / ami build (uefi): $(ratio "${med[mmdebstrap+mke2fs]}" "${med[ami-uefi]}")x"
echo "   aim under 15 s: $(awk -v v="${med[ami-uefi]}" 'BEGIN { print (v < 15) ? "met" : "missed" }')"
awk -v r="$r" 'BEGIN { exit !(r >= 3) }' || die "ami build is not 3x faster (${r}x)"
echo "   required 3x: met"
