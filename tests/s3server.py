"""A real S3 API on loopback for the workers' s3:// paths: moto's server mode in a subprocess.

`moto.server` speaks the S3 REST protocol over HTTP (SigV4 auth, ranged GETs, ListObjectsV2), so
s3fs/botocore in the code under test make the same requests they make to AWS or MinIO. Request
authentication is switched on after setup (`/moto-api/reset-auth`): from then on only the access key
created here is accepted, and a wrong key gets the 403 InvalidAccessKeyId a real server sends.

Test modules take the fixture with `s3_server = s3server.s3_server` (tests/ is on sys.path, as its
conftest.py sits there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ports import free_port

REGION = "us-east-1"
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
TRUST_ANYONE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
)


@dataclass
class S3Server:
    endpoint: str
    key: str
    secret: str
    role_arn: str

    def env(self, **overrides: str) -> dict[str, str]:
        """What a worker pod gets from its credentialsSecretRef (envFrom) for this server."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_REGION": REGION,
        }
        env.update(overrides)
        return {k: v for k, v in env.items() if v}

    def client(self, **creds: str) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=creds.get("key", self.key),
            aws_secret_access_key=creds.get("secret", self.secret),
            aws_session_token=creds.get("token"),
        )

    def temporary_credentials(self) -> dict[str, str]:
        """AWS_* for an assumed role: an ASIA key that only works together with its session token."""
        import boto3

        sts = boto3.client(
            "sts",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
        )
        c = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="worker-pod")["Credentials"]
        return {
            "AWS_ACCESS_KEY_ID": c["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
            "AWS_SESSION_TOKEN": c["SessionToken"],
        }

    def put(self, bucket: str, key: str, body: bytes) -> str:
        self.client().put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def _start() -> tuple[subprocess.Popen[bytes], str]:
    last = ""
    for _ in range(3):  # the port can be taken between probing and binding it
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "MOTO_CALL_RESET_API": "false"},
        )
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):
                    return proc, endpoint
            except OSError:
                time.sleep(0.1)
        proc.kill()
        _, err = proc.communicate()
        last = err.decode(errors="replace")[-2000:]
    raise RuntimeError(f"moto server did not start:\n{last}")


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """A running S3 server on 127.0.0.1 that authenticates requests; torn down with the module."""
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
    import boto3

    proc, endpoint = _start()
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="x",
        )
        iam.create_user(UserName="worker")
        iam.put_user_policy(UserName="worker", PolicyName="all", PolicyDocument=ALLOW_ALL)
        ak = iam.create_access_key(UserName="worker")["AccessKey"]
        role = iam.create_role(RoleName="reader", AssumeRolePolicyDocument=TRUST_ANYONE)["Role"]
        iam.put_role_policy(RoleName="reader", PolicyName="all", PolicyDocument=ALLOW_ALL)
        # from here on every request must be signed with a key moto knows
        req = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(req, timeout=10):
            pass
        yield S3Server(endpoint, ak["AccessKeyId"], ak["SecretAccessKey"], role["Arn"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
