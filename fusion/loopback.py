"""Servers on loopback, for the tests, the benchmarks and `fusion reproduce`'s process group:
a free port, waiting for a server to answer, stopping one, and an S3-compatible store
(moto's server mode, a test dependency) with one bucket."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fusion.errors import FusionError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    """Until `url` answers 200; a server `proc` that exits first is reported at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def terminate(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a server: SIGTERM, then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def s3_server(log_dir: Path, bucket: str) -> Iterator[dict[str, str]]:
    """moto's S3 server with `bucket` made; yields the AWS_* settings a client needs (the
    endpoint in AWS_ENDPOINT_URL), for the caller to hand to the processes that use it."""
    import boto3

    port = free_port()
    aws = {
        "AWS_ACCESS_KEY_ID": "fusionflow",
        "AWS_SECRET_ACCESS_KEY": "fusionflow-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    server = Path(sys.executable).parent / "moto_server"
    if not server.is_file():
        raise FusionError(
            f"{server} not found: the S3 server on loopback is moto's, a test dependency (make install-test)"
        )
    with open(log_dir / "moto.log", "w") as log:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"{aws['AWS_ENDPOINT_URL']}/moto-api/", proc=proc)
            boto3.client(
                "s3",
                endpoint_url=aws["AWS_ENDPOINT_URL"],
                aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
                region_name=aws["AWS_DEFAULT_REGION"],
            ).create_bucket(Bucket=bucket)
            yield aws
        finally:
            terminate(proc)
