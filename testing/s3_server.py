"""An S3-compatible server on loopback for tests, benchmarks and the demo: moto's standalone
server (`moto[server]`) in a subprocess, a real HTTP endpoint speaking the S3 API.

Owns the process, its port, the bucket it creates and the credentials it accepts. With
`auth=True` the server checks signatures (moto's IAM: a user with an allow-all policy is made
first), so wrong credentials are refused as by R2; without it any credentials pass, and objects
put with ACL `public-read` are served anonymously at `{endpoint}/{bucket}/{key}`, which stands in
for the CDN. moto keeps everything in memory: a stopped server forgets its objects.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from types import TracebackType
from typing import Any, Self

import boto3
import httpx

READY_TIMEOUT_SECONDS = 30.0
REGION = "us-east-1"
"""moto's default; another region would need a LocationConstraint on create_bucket."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class S3Server:
    """moto's S3 server on 127.0.0.1, with one bucket and a key pair that works."""

    def __init__(self, bucket: str = "404-gen", *, auth: bool = False, port: int = 0) -> None:
        """Configure (nothing runs before `start`); port 0 picks a free port once."""
        self.bucket = bucket
        self.auth = auth
        self.port = port or _free_port()
        self.access_key_id = "test-access-key"
        self.secret_access_key = "test-secret-key"  # noqa: S105 - moto accepts any without auth
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """R2_ENDPOINT for this server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        """CDN_URL for this server: public-read objects are served under it."""
        return f"{self.endpoint}/{self.bucket}"

    def env(self) -> dict[str, str]:
        """The settings a worker needs to use this server as its artifact store."""
        return {
            "ARTIFACT_STORE": "s3",
            "R2_ENDPOINT": self.endpoint,
            "R2_ACCESS_KEY_ID": self.access_key_id,
            "R2_SECRET_ACCESS_KEY": self.secret_access_key,
            "R2_BUCKET": self.bucket,
            "R2_REGION": REGION,
            "R2_OBJECT_ACL": "public-read",
            "CDN_URL": self.public_url,
        }

    def start(self) -> Self:
        """Start the server (on the same port after a `stop`) and create the bucket."""
        env = dict(os.environ)
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"  # user, policy, key; then signatures count
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server on port {self.port} exited at start")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server on port {self.port} did not answer") from None
                time.sleep(0.05)
        if self.auth:
            self._make_user()
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self, secret: str | None = None) -> Any:
        """A boto3 S3 client with this server's credentials (or another `secret`)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret or self.secret_access_key,
            region_name=REGION,
        )

    def _make_user(self) -> None:
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",  # noqa: S106 - unchecked for the first 3 calls
            region_name=REGION,
        )
        iam.create_user(UserName="orchestrator")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="orchestrator", PolicyName="all", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName="orchestrator")["AccessKey"]
        self.access_key_id = key["AccessKeyId"]
        self.secret_access_key = key["SecretAccessKey"]

    def stop(self) -> None:
        """Stop the server (its objects are gone)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
