#!/usr/bin/env python3
"""Reads an EBS snapshot back through the EBS direct APIs with boto3, as a
second, independent client (tests/ebs.rs checks `ami`'s uploads with it).

    ebs_read_snapshot.py --endpoint URL --snapshot ID --out FILE --size N

Lists the snapshot's blocks (ListSnapshotBlocks, following NextToken),
fetches each (GetSnapshotBlock with its BlockToken), checks the block
against the Base64 SHA-256 the service returns with it, and writes it at
offset index * 524288 of FILE, which is made N bytes long (blocks not in
the snapshot read as zeros; a block reaching past N is cut). Prints one
JSON object: the block indices, the LINEAR aggregate checksum recomputed
from the downloaded data (Base64 SHA-256 of the raw block digests in index
order), and the BlockSize and VolumeSize the service reported.

Credentials are fixed fake ones unless set in the environment; the region
is us-east-1 unless AWS_DEFAULT_REGION says otherwise.
"""

import argparse
import base64
import hashlib
import json
import os
import sys

import boto3
from botocore.config import Config

# The EBS direct APIs' block size (the API reference fixes it at 512 KiB).
BLOCK_SIZE = 524288


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--snapshot", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", required=True, type=int)
    args = p.parse_args()

    client = boto3.client(
        "ebs",
        endpoint_url=args.endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        aws_secret_access_key=os.environ.get(
            "AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        ),
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )

    blocks = {}
    reported = {}
    kwargs = {"SnapshotId": args.snapshot}
    seen_tokens = set()
    while True:
        page = client.list_snapshot_blocks(**kwargs)
        reported = {"BlockSize": page.get("BlockSize"), "VolumeSize": page.get("VolumeSize")}
        for b in page.get("Blocks", []):
            blocks[int(b["BlockIndex"])] = b["BlockToken"]
        token = page.get("NextToken")
        if not token or token in seen_tokens:
            break
        seen_tokens.add(token)
        kwargs["NextToken"] = token

    digests = []
    with open(args.out, "wb") as out:
        out.truncate(args.size)
        for index in sorted(blocks):
            r = client.get_snapshot_block(
                SnapshotId=args.snapshot, BlockIndex=index, BlockToken=blocks[index]
            )
            data = r["BlockData"].read()
            if len(data) != BLOCK_SIZE:
                print(f"block {index}: {len(data)} bytes, not {BLOCK_SIZE}", file=sys.stderr)
                return 1
            digest = hashlib.sha256(data).digest()
            if r.get("Checksum") and base64.b64decode(r["Checksum"]) != digest:
                print(f"block {index}: checksum mismatch", file=sys.stderr)
                return 1
            digests.append(digest)
            offset = index * BLOCK_SIZE
            if offset >= args.size:
                if data.strip(b"\0"):
                    print(f"block {index}: non-zero data past the end", file=sys.stderr)
                    return 1
                continue
            out.seek(offset)
            out.write(data[: args.size - offset])

    aggregate = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    json.dump(
        {
            "blocks": sorted(blocks),
            "aggregate_checksum": aggregate,
            "reported": reported,
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
