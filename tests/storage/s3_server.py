"""A real S3 server on loopback for the tests: moto's server mode, run as a subprocess."""

import os
import sys

import boto3
from botocore.config import Config

from tests import processes

MOTO_SERVER = os.path.join(os.path.dirname(sys.executable), "moto_server")
# Dummy credentials: moto accepts any, but boto3 signs every request and needs some.
ACCESS_KEY = "parseq-test-access-key"
SECRET_KEY = "parseq-test-secret-key"
REGION = "us-east-1"


def moto_server_missing():
    """None when moto's server can be started, else why not (for a skip, or a failure in CI)."""
    if os.access(MOTO_SERVER, os.X_OK):
        return None
    return f"needs moto's S3 server ({MOTO_SERVER}): pip install -r requirements-dev.txt"


class S3Server:
    """One moto S3 server process; its objects live in its memory and go when it stops."""

    def __init__(self):
        self.port = processes.free_port()
        self.process = None

    @property
    def endpoint_url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=20):
        """Start the server (on the same port when started again) and wait until it answers."""
        self.process = processes.start(
            [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
            ready=self.answers,
            timeout=timeout,
            message="moto_server to answer",
        )
        return self

    def answers(self):
        try:
            self.client().list_buckets()
        except Exception:  # not listening yet
            return False
        return True

    def stop(self):
        """Stop the server at once, as an outage would; idempotent."""
        if self.process is not None:
            self.process.kill()
        self.process = None

    def close(self):
        self.stop()

    def client(self, **config):
        # No retries and short timeouts: a test that waits for a server that is not there fails at once.
        settings = {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 10, **config}
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(**settings),
        )

    def keys(self, bucket):
        """Every key in the bucket, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", ()))

    def empty(self, bucket):
        """Delete every object of the bucket."""
        keys = self.keys(bucket)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self.client().delete_objects(Bucket=bucket, Delete={"Objects": batch})
