#!/usr/bin/env bash
# ami bundle against the shell pipeline of Amazon's ec2-bundle-image, on the
# same image, in one run.
#
# Usage: benches/bundle-vs-ruby-pipeline.sh [IMAGE] [RUNS (default 1)]
#
# Without IMAGE, makes a realistic one first: a 2 GiB ext4 image (the size
# `ami build` makes) of AMI_BENCH_SOURCE (default /usr/lib/x86_64-linux-gnu,
# about 0.7 GB of binaries and libraries) with `ami mkfs --root-owner`.
# Everything is written into tmpfs (AMI_BENCH_DIR, default /dev/shm).
#
# Each round runs, in turn:
#   ruby  what ec2-bundle-image 1.5.3 runs (lib/ec2/amitools/bundle.rb):
#           tar -c -h -S --owner 0 --group 0 -C DIR NAME | tee FIFO | gzip -9 |
#             openssl enc -e -aes-128-cbc -K KEY -iv IV > NAME.tar.gz.enc
#         with `openssl sha1 < FIFO` hashing the tar stream, then
#           split -b 10m NAME.tar.gz.enc NAME.part. ; rm NAME.tar.gz.enc ;
#           sha1sum NAME.part.*
#         (the Ruby tool splits and hashes in Ruby; split and sha1sum are
#         at least as fast)
#   ami   ami bundle IMAGE ... (gzip level 9 by default; AMI_BENCH_LEVEL)
# timed with /usr/bin/time (wall seconds; peak RSS: the largest single
# process of the pipeline, i.e. what /usr/bin/time reports for its
# children). It prints every run, the medians, MB/s of image and of tar
# stream, the compressed sizes, and checks:
#   ruby / ami (time)   >= 2
#   ami bytes <= ruby bytes (same or better compression)
#   the manifest's image digest == the SHA-1 of the pipeline's tar stream
#     (byte-identical tar streams)
# and finally unbundles ami's bundle with `ami unbundle` and compares the
# result with the image (cmp).
#
# Exits 1 if a check fails or a tool fails. Run it on an otherwise idle
# machine: the numbers of a shared 2-core VM vary by tens of percent.
set -euo pipefail

image=${1:-}
runs=${2:-1}
repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${AMI_BENCH_DIR:-/dev/shm}
source_dir=${AMI_BENCH_SOURCE:-/usr/lib/x86_64-linux-gnu}
level=${AMI_BENCH_LEVEL:-9}

die() {
    echo "error: $*" >&2
    exit 1
}

for tool in tar gzip openssl split sha1sum tee mkfifo cmp awk cargo; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install tar gzip openssl coreutils diffutils)"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
[[ -d $bench_dir ]] || die "$bench_dir does not exist (set AMI_BENCH_DIR to a tmpfs directory)"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, not $runs"

echo "== building ami (release)"
(cd "$repo" && cargo build --release --locked -p ami-cli)
ami=${CARGO_TARGET_DIR:-$repo/target}/release/ami
[[ -x $ami ]] || die "no binary at $ami"

work=$(mktemp -d "$bench_dir/ami-bundle-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [[ -z $image ]]; then
    [[ -d $source_dir ]] || die "$source_dir is not a directory (set AMI_BENCH_SOURCE)"
    image=$work/image/root.img
    mkdir "$work/image"
    echo "== making a 2 GiB ext4 image of $source_dir"
    "$ami" mkfs --root-owner --size 2G "$source_dir" "$image" 2>&1 | tail -n 1
fi
[[ -f $image ]] || die "$image is not a file"
image=$(realpath "$image")
name=$(basename "$image")
image_dir=$(dirname "$image")
image_bytes=$(stat -c %s "$image")
alloc_bytes=$(($(stat -c %b "$image") * $(stat -c %B "$image")))
echo "== $image: $image_bytes bytes, $alloc_bytes allocated (holes are skipped by both)"

"$ami" keys --out "$work/keys" 2>/dev/null
cert=$work/keys/certificate.pem
key=$work/keys/private-key.pem
# Warm the page cache.
cat "$image" >/dev/null

# measure NAME COMMAND...: sets $secs and $rss_mb.
measure() {
    local name=$1
    shift
    local status=0
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "$name failed (exit status $status):" >&2
        cat "$work/err" >&2
        exit 1
    fi
    read -r secs rss_kb < <(tail -n 1 "$work/time")
    rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The Ruby tool's pipeline, as one script (arguments: image dir, name, out).
cat >"$work/ruby-pipeline.sh" <<'EOF'
set -euo pipefail
dir=$1 name=$2 out=$3
key=$(openssl rand -hex 16)
iv=$(openssl rand -hex 16)
fifo=$out/digest-pipe
mkfifo "$fifo"
openssl sha1 <"$fifo" >"$out/tar.sha1" &
tar -c -h -S --owner 0 --group 0 -C "$dir" "$name" | tee "$fifo" | gzip -9 |
    openssl enc -e -aes-128-cbc -K "$key" -iv "$iv" >"$out/$name.tar.gz.enc"
wait
rm -f "$fifo"
(cd "$out" && split -b 10m -d -a 4 "$name.tar.gz.enc" "$name.part.")
rm "$out/$name.tar.gz.enc"
(cd "$out" && sha1sum "$name".part.* >parts.sha1)
EOF

ruby_t=() ami_t=() ruby_rss=() ami_rss=()
printf '%-4s %-5s %9s %10s %14s\n' run tool seconds "peak MB" "bundle bytes"
for ((run = 1; run <= runs; run++)); do
    rm -rf "$work/ruby" && mkdir "$work/ruby"
    measure ruby bash "$work/ruby-pipeline.sh" "$image_dir" "$name" "$work/ruby"
    ruby_t+=("$secs")
    ruby_rss+=("$rss_mb")
    ruby_bytes=$(cat "$work/ruby/$name".part.* | wc -c)
    ruby_sha1=$(awk '{ print $NF }' "$work/ruby/tar.sha1")
    printf '%-4s %-5s %9s %10s %14s\n' "$run" ruby "$secs" "$rss_mb" "$ruby_bytes"

    rm -rf "$work/ami" && mkdir "$work/ami"
    measure ami "$ami" bundle "$image" --cert "$cert" --privatekey "$key" --user 123456789012 \
        --arch x86_64 --destination "$work/ami" --level "$level" --json
    ami_t+=("$secs")
    ami_rss+=("$rss_mb")
    ami_json=$(cat "$work/out")
    ami_bytes=$(grep -o '"bundled_bytes":[0-9]*' <<<"$ami_json" | cut -d: -f2)
    ami_gzip=$(grep -o '"gzip_bytes":[0-9]*' <<<"$ami_json" | cut -d: -f2)
    tar_bytes=$(grep -o '"tar_bytes":[0-9]*' <<<"$ami_json" | cut -d: -f2)
    ami_sha1=$(grep -o '"digest":"[0-9a-f]*"' <<<"$ami_json" | cut -d'"' -f4)
    printf '%-4s %-5s %9s %10s %14s\n' "$run" ami "$secs" "$rss_mb" "$ami_bytes"
done

ruby_m=$(median "${ruby_t[@]}")
ami_m=$(median "${ami_t[@]}")
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0 ? b / s / 1e6 : 0) }'; }
echo
echo "== medians of $runs run(s); tar stream $tar_bytes bytes"
printf '%-5s %9s %10s %14s %14s %14s\n' tool seconds "peak MB" "image MB/s" "tar MB/s" "bundle bytes"
printf '%-5s %9s %10s %14s %14s %14s\n' ruby "$ruby_m" "$(median "${ruby_rss[@]}")" \
    "$(rate "$image_bytes" "$ruby_m")" "$(rate "$tar_bytes" "$ruby_m")" "$ruby_bytes"
printf '%-5s %9s %10s %14s %14s %14s\n' ami "$ami_m" "$(median "${ami_rss[@]}")" \
    "$(rate "$image_bytes" "$ami_m")" "$(rate "$tar_bytes" "$ami_m")" "$ami_bytes"
echo "  (ami's gzip stream: $ami_gzip bytes at level $level; the pipeline's: gzip -9)"

failed=0
check() { # description ok(1/0) detail
    if [[ $2 == 1 ]]; then
        printf '  %-44s ok   %s\n' "$1" "$3"
    else
        printf '  %-44s MISSED   %s\n' "$1" "$3"
        failed=1
    fi
}
echo
echo "== checks"
speedup=$(awk -v a="$ruby_m" -v b="$ami_m" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
check "ruby / ami (time) >= 2" "$(awk -v r="$speedup" 'BEGIN { print (r >= 2) }')" "$speedup"
size_pct=$(awk -v a="$ami_bytes" -v r="$ruby_bytes" 'BEGIN { printf "%+.2f%%", (a - r) * 100 / r }')
check "ami bundle bytes <= ruby bundle bytes" "$((ami_bytes <= ruby_bytes ? 1 : 0))" "$size_pct"
check "same tar stream (image digest)" "$([[ $ami_sha1 == "$ruby_sha1" ]] && echo 1 || echo 0)" \
    "$ami_sha1"

mkdir "$work/unbundled"
"$ami" unbundle --manifest "$work/ami/$name.manifest.xml" --privatekey "$key" \
    --destination "$work/unbundled" 2>/dev/null
if cmp -s "$image" "$work/unbundled/$name"; then
    check "ami unbundle gives back the image" 1 ""
else
    check "ami unbundle gives back the image" 0 ""
fi
exit "$failed"
