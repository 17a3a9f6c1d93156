#!/bin/sh
# prep-instance: prepares an instance booted from an ami-built image.
#
# Run at every boot by prep-instance.service, after the network is online
# and before ssh.service:
#   1. generates the SSH host keys that are missing (the image has none);
#   2. fetches the instance's public key from the EC2 instance metadata
#      service, with an IMDSv2 token (PUT /latest/api/token, then GET with
#      the token header), falling back to IMDSv1, retrying while the network
#      comes up;
#   3. adds it to ~@ADMIN_USER@/.ssh/authorized_keys unless already there
#      (.ssh 0700, file 0600, both owned by the user).
# Messages go to standard output, which the unit sends to the console.
#
# For tests, the environment can override: PREP_ROOT (a directory taken as
# /), PREP_IMDS (the metadata service's base URL), PREP_USER, PREP_TRIES,
# PREP_DELAY (seconds between tries) and PREP_KEYGEN (the ssh-keygen to run).

set -u

root="${PREP_ROOT:-}"
imds="${PREP_IMDS:-http://169.254.169.254}"
user="${PREP_USER:-@ADMIN_USER@}"
tries="${PREP_TRIES:-30}"
delay="${PREP_DELAY:-2}"
keygen="${PREP_KEYGEN:-ssh-keygen}"
key_path="/latest/meta-data/public-keys/0/openssh-key"

log() {
	echo "prep-instance: $*"
}

# 1. Host keys.
missing=no
for t in rsa ecdsa ed25519; do
	[ -s "$root/etc/ssh/ssh_host_${t}_key" ] || missing=yes
done
if [ "$missing" = yes ]; then
	if [ -n "$root" ]; then
		"$keygen" -A -f "$root" || log "ssh-keygen -A failed"
	else
		"$keygen" -A || log "ssh-keygen -A failed"
	fi
	log "generated missing SSH host keys"
fi

# 2. The public key.
wget_() {
	wget -q -O - --no-proxy --timeout=3 --tries=1 "$@"
}

# One try: sets key and how; returns wget's status of the last request
# (8: the service answered with an error, e.g. no key pair).
attempt() {
	token=$(wget_ --method=PUT \
		--header="X-aws-ec2-metadata-token-ttl-seconds: 300" \
		"$imds/latest/api/token" 2>/dev/null) || token=
	if [ -n "$token" ]; then
		how=IMDSv2
		key=$(wget_ --header="X-aws-ec2-metadata-token: $token" "$imds$key_path" 2>/dev/null) &&
			return 0
	fi
	how=IMDSv1
	key=$(wget_ "$imds$key_path" 2>/dev/null)
}

key=
how=
status=1
n=0
while [ "$n" -lt "$tries" ]; do
	n=$((n + 1))
	attempt
	status=$?
	[ "$status" -eq 0 ] && break
	# The service answered, but has no key for us: do not wait for it.
	[ "$status" -eq 8 ] && break
	[ "$n" -lt "$tries" ] && sleep "$delay"
done

if [ "$status" -eq 8 ]; then
	log "the metadata service has no public key for this instance; nothing installed"
	exit 0
fi
if [ "$status" -ne 0 ] || [ -z "$key" ]; then
	log "could not reach the metadata service at $imds after $n tries"
	exit 1
fi

# 3. authorized_keys.
entry=
while IFS=: read -r name _pw uid gid _gecos home _shell; do
	if [ "$name" = "$user" ]; then
		entry="$uid:$gid:$home"
		break
	fi
done <"$root/etc/passwd"
if [ -z "$entry" ]; then
	log "no user $user in /etc/passwd"
	exit 1
fi
uid=${entry%%:*}
rest=${entry#*:}
gid=${rest%%:*}
home=${rest#*:}

dir="$root$home/.ssh"
file="$dir/authorized_keys"
mkdir -p "$dir"
chown "$uid:$gid" "$dir"
chmod 0700 "$dir"
[ -e "$file" ] || : >"$file"
added=0
old_ifs=$IFS
IFS='
'
for line in $key; do
	case "$line" in
	"" | "#"*) continue ;;
	esac
	if ! grep -qxF -- "$line" "$file"; then
		printf '%s\n' "$line" >>"$file"
		added=$((added + 1))
	fi
done
IFS=$old_ifs
chown "$uid:$gid" "$file"
chmod 0600 "$file"
log "$added new key(s) for $user (via $how)"
