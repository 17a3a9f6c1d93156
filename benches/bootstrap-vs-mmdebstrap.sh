#!/usr/bin/env bash
# ami bootstrap against mmdebstrap --variant=extract and debootstrap
# --download-only plus extraction: the same Debian package set, from the same
# mirror, on the same machine, with warm package caches.
#
# Usage: benches/bootstrap-vs-mmdebstrap.sh [MIRROR] [RUNS (default 3)]
#
# MIRROR is a repository root URL; the suites $SUITE and $SUITE-updates
# (SUITE defaults to bookworm) are read from it, plus $SUITE-security from
# SECURITY_MIRROR if that variable is set. Without MIRROR (or with "host"),
# every tool reads the sources of the host's apt configuration (from
# `apt-get indextargets`). debootstrap reads only one suite: $SUITE from
# MIRROR, or the host's release suite.
#
# The package set: the default variant (Essential, required, important) plus
# $PACKAGES (default: usr-is-merged makedev sudo openssh-server ssh wget
# linux-image-cloud-amd64, 177 packages on Debian 12). ami resolves it; the
# resolved names are given to mmdebstrap --include, so that both unpack the
# same packages; debootstrap resolves the same request itself.
#
# Builds ami in release mode, warms every cache with one run of each tool,
# then runs RUNS rounds of, in turn:
#   ami          ami bootstrap (update, resolve, check the cached .debs,
#                unpack into memory, dpkg database); decompressed archives
#                cached from the warm-up run
#   ami-xz       the same after deleting ami's cache of decompressed
#                archives: every package is decompressed again, as the other
#                tools do on every run
#   ami-image    ami bootstrap --image: also writes the tree as an ext4 image
#   mmdebstrap   mmdebstrap --variant=extract --include=<the same names>
#                into a directory, .debs from a warm cache (sync-in hook)
#   debootstrap  debootstrap --download-only --cache-dir (warm) plus
#                dpkg-deb --fsys-tarfile | tar -x of every package over
#                merged-/usr links
# each timed with /usr/bin/time (wall seconds, peak RSS of the largest
# process), writing into tmpfs (AMI_BENCH_DIR, default /dev/shm). Prints
# every run, the medians and the ratios against the targets:
#   ami-xz < mmdebstrap  (required: faster than mmdebstrap's extract variant)
#   ami-xz < 10 s        (the aim)
# Every tool fetches the suites' Release files on every run (and apt and
# debootstrap the indices too: ami keeps them in its cache).
#
# Run it as root (mmdebstrap and debootstrap need it) on an otherwise idle
# machine; it installs mmdebstrap and debootstrap with apt-get if missing.
# Exits 1 if the requirement is missed or a tool fails.
set -euo pipefail

mirror=${1:-host}
runs=${2:-3}
suite=${SUITE:-bookworm}
packages=${PACKAGES:-usr-is-merged makedev sudo openssh-server ssh wget linux-image-cloud-amd64}
repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${AMI_BENCH_DIR:-/dev/shm}

die() {
    echo "error: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run this as root (mmdebstrap and debootstrap need it)"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not $runs"
[[ -d $bench_dir ]] || die "$bench_dir does not exist (set AMI_BENCH_DIR to a tmpfs directory)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
missing=()
for tool in mmdebstrap debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "== installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in cargo dpkg-deb tar awk apt-get; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

echo "== building ami (release)"
(cd "$repo" && cargo build --release --locked -p ami-cli)
ami=${CARGO_TARGET_DIR:-$repo/target}/release/ami
[[ -x $ami ]] || die "no binary at $ami"

work=$(mktemp -d "$bench_dir/ami-bootstrap-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Caches outside tmpfs would be fine too; here everything is in one place.
ami_cache=$work/ami-cache
mm_cache=$work/mm-cache
db_cache=$work/db-cache
mkdir -p "$mm_cache" "$db_cache" "$work/apt/sources.list.d"

# The sources, as one-line apt entries, for ami (through --apt-dir) and
# mmdebstrap; and debootstrap's single mirror and suite.
lines=()
if [[ $mirror == host ]]; then
    while read -r uri release components; do
        lines+=("deb ${uri%/} $release $components")
    done < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
        'Identifier: Packages' | sort -u |
        awk '{ k = $1 " " $2; if (!(k in c)) order[n++] = k; c[k] = c[k] " " $3 }
             END { for (i = 0; i < n; i++) print order[i] c[order[i]] }')
    [[ ${#lines[@]} -gt 0 ]] || die "the host's apt configuration has no sources (run apt-get update)"
    db_line=$(printf '%s\n' "${lines[@]}" | awk '$3 !~ /-/ { print; exit }')
    [[ -n $db_line ]] || die "the host's apt sources have no release suite for debootstrap"
    db_mirror=$(awk '{ print $2 }' <<<"$db_line")
    suite=$(awk '{ print $3 }' <<<"$db_line")
else
    lines=("deb $mirror $suite main" "deb $mirror $suite-updates main")
    if [[ -n ${SECURITY_MIRROR:-} ]]; then
        lines+=("deb $SECURITY_MIRROR $suite-security main")
    fi
    db_mirror=$mirror
fi
printf '%s\n' "${lines[@]}" >"$work/apt/sources.list"
ln -s /etc/apt/trusted.gpg.d "$work/apt/trusted.gpg.d"
echo "== sources (${#lines[@]}); debootstrap reads suite $suite only"
printf '   %s\n' "${lines[@]}" | sed -E 's#://[^/ ]+#://<mirror>#'

# shellcheck disable=SC2206 # word splitting of the package list is wanted
extras=($packages)
ami_args=(bootstrap --apt-dir "$work/apt" --cache "$ami_cache" "${extras[@]}")

# measure NAME COMMAND...: runs COMMAND under /usr/bin/time; sets $secs and
# $rss_mb.
measure() {
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

run_mmdebstrap() {
    rm -rf "$work/mm"
    mmdebstrap --variant=extract --include="$names" --skip=essential/unlink \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
        --setup-hook="sync-in $mm_cache /var/cache/apt/archives/" \
        --extract-hook="sync-out /var/cache/apt/archives $mm_cache" \
        "$suite" "$work/mm" "${lines[@]}"
}

# debootstrap --download-only, then every package extracted over merged-/usr
# links (tar keeps them: --keep-directory-symlink).
run_debootstrap() {
    local target=$work/db
    rm -rf "$target"
    debootstrap --download-only --cache-dir="$db_cache" \
        --include="$(tr ' ' ',' <<<"$packages")" "$suite" "$target" "$db_mirror"
    for d in bin sbin lib lib64; do
        mkdir -p "$target/usr/$d"
        ln -s "usr/$d" "$target/$d"
    done
    for deb in "$target"/var/cache/apt/archives/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$target" --keep-directory-symlink -f -
    done
}
export -f run_debootstrap run_mmdebstrap
export work mm_cache db_cache packages suite db_mirror

echo "== warm-up (fills every cache)"
measure ami "$ami" "${ami_args[@]}" --list
cp "$work/out" "$work/list"
count=$(wc -l <"$work/list")
names=$(awk '{ print $1 }' "$work/list" | paste -sd, -)
export names
lines_str=$(printf '%q ' "${lines[@]}")
export lines_str
printf '   %-12s %6ss  (%s packages)\n' ami "$secs" "$count"
measure mmdebstrap bash -c 'eval "lines=($lines_str)"; run_mmdebstrap'
mm_count=$(find "$mm_cache" -name '*.deb' | wc -l)
printf '   %-12s %6ss  (%s packages)\n' mmdebstrap "$secs" "$mm_count"
measure debootstrap bash -c run_debootstrap
db_count=$(find "$work/db/var/cache/apt/archives" -name '*.deb' | wc -l)
printf '   %-12s %6ss  (%s packages)\n' debootstrap "$secs" "$db_count"
[[ $mm_count -eq $count ]] || die "mmdebstrap unpacked $mm_count packages, ami $count"
rm -rf "$work/mm" "$work/db"
echo

declare -A t rss
tools=(ami ami-xz ami-image mmdebstrap debootstrap)
printf '%-4s %-12s %9s %10s\n' run tool seconds "peak MB"
for ((run = 1; run <= runs; run++)); do
    for tool in "${tools[@]}"; do
        case $tool in
        ami) measure "$tool" "$ami" "${ami_args[@]}" ;;
        ami-xz)
            rm -rf "$ami_cache/tar"
            measure "$tool" "$ami" "${ami_args[@]}"
            ;;
        ami-image)
            measure "$tool" "$ami" "${ami_args[@]}" --image "$work/ami.img"
            rm -f "$work/ami.img"
            ;;
        mmdebstrap)
            measure "$tool" bash -c 'eval "lines=($lines_str)"; run_mmdebstrap'
            rm -rf "$work/mm"
            ;;
        debootstrap)
            measure "$tool" bash -c run_debootstrap
            rm -rf "$work/db"
            ;;
        esac
        t[$tool]+="$secs "
        rss[$tool]+="$rss_mb "
        printf '%-4s %-12s %9s %10s\n' "$run" "$tool" "$secs" "$rss_mb"
    done
done

echo
echo "== medians of $runs runs ($count packages)"
printf '%-12s %9s %10s\n' tool seconds "peak MB"
declare -A med
for tool in "${tools[@]}"; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    med[$tool]=$(median ${t[$tool]})
    # shellcheck disable=SC2086
    printf '%-12s %9s %10s\n' "$tool" "${med[$tool]}" "$(median ${rss[$tool]})"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b > 0 ? a / b : 0) }'; }
echo
echo "== ratios (how many times faster than ami-xz / ami)"
for other in mmdebstrap debootstrap; do
    printf '  %-12s / ami-xz %6s    / ami %6s    / ami-image %6s\n' "$other" \
        "$(ratio "${med[$other]}" "${med[ami-xz]}")" "$(ratio "${med[$other]}" "${med[ami]}")" \
        "$(ratio "${med[$other]}" "${med[ami-image]}")"
done

failed=0
check() { # description value op target
    local ok
    ok=$(awk -v v="$2" -v t="$4" 'BEGIN { print (v < t) }')
    if [[ $ok == 1 ]]; then
        printf '  %-34s %7s s  (%s %s)  ok\n' "$1" "$2" "$3" "$4"
    else
        printf '  %-34s %7s s  (%s %s)  MISSED\n' "$1" "$2" "$3" "$4"
        failed=1
    fi
}
echo
echo "== targets"
check "ami-xz faster than mmdebstrap" "${med[ami-xz]}" "<" "${med[mmdebstrap]}"
aim=$(awk -v v="${med[ami-xz]}" 'BEGIN { print (v < 10) ? "met" : "missed" }')
printf '  %-34s %7s s  (aim: < 10 s)  %s\n' "ami-xz" "${med[ami-xz]}" "$aim"
exit "$failed"
