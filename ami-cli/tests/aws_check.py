#!/usr/bin/env python3
"""An independent AWS client (boto3) for the tests of `ami upload-bundle`,
`ami register` and `ami deregister`: it reads back what ami wrote to an
S3/EC2-compatible endpoint and prints it as JSON.

usage: aws_check.py ENDPOINT objects BUCKET PREFIX
       aws_check.py ENDPOINT make-bucket BUCKET OWNERSHIP
       aws_check.py ENDPOINT image AMI
       aws_check.py ENDPOINT snapshots ID...
       aws_check.py ENDPOINT make-user USER
       aws_check.py ENDPOINT signing-certs USER
"""
import hashlib
import json
import sys

import boto3
from botocore.exceptions import ClientError


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )


def main():
    endpoint, command, *args = sys.argv[1:]
    if command == "objects":
        bucket, prefix = args
        s3 = client("s3", endpoint)
        out = {}
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                acl = s3.get_object_acl(Bucket=bucket, Key=obj["Key"])
                out[obj["Key"]] = {
                    "sha1": hashlib.sha1(body).hexdigest(),
                    "size": len(body),
                    "grants": len(acl.get("Grants", [])),
                }
        print(json.dumps(out, sort_keys=True))
    elif command == "make-bucket":
        bucket, ownership = args
        s3 = client("s3", endpoint)
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_ownership_controls(
            Bucket=bucket,
            OwnershipControls={"Rules": [{"ObjectOwnership": ownership}]},
        )
        print(json.dumps({"bucket": bucket}))
    elif command == "image":
        (ami,) = args
        ec2 = client("ec2", endpoint)
        try:
            images = ec2.describe_images(ImageIds=[ami])["Images"]
        except ClientError as e:
            if e.response["Error"]["Code"].startswith("InvalidAMIID"):
                images = []
            else:
                raise
        print(json.dumps({"images": [
            {
                "id": i["ImageId"],
                "name": i.get("Name"),
                "snapshots": [
                    m["Ebs"]["SnapshotId"]
                    for m in i.get("BlockDeviceMappings", [])
                    if m.get("Ebs", {}).get("SnapshotId")
                ],
            }
            for i in images
        ]}))
    elif command == "snapshots":
        # Which of the given snapshot ids exist.
        ec2 = client("ec2", endpoint)
        found = []
        for snap in args:
            try:
                ec2.describe_snapshots(SnapshotIds=[snap])
                found.append(snap)
            except ClientError as e:
                if e.response["Error"]["Code"] != "InvalidSnapshot.NotFound":
                    raise
        print(json.dumps({"snapshots": found}))
    elif command == "make-user":
        (user,) = args
        client("iam", endpoint).create_user(UserName=user)
        print(json.dumps({"user": user}))
    elif command == "signing-certs":
        (user,) = args
        certs = client("iam", endpoint).list_signing_certificates(UserName=user)["Certificates"]
        print(json.dumps({"certificates": [
            {"id": c["CertificateId"], "body": c["CertificateBody"], "status": c["Status"]}
            for c in certs
        ]}))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
