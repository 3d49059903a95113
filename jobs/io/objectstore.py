"""The one place that talks to the object store (S3 API): reports and other published files.

Works unchanged against SeaweedFS, MinIO or AWS S3: the endpoint comes from
BATCHLOOP_S3_ENDPOINT_URL (unset for AWS), credentials from the standard AWS variables.
"""

from __future__ import annotations

import logging

from jobs.config import Env
from jobs.errors import ServiceUnavailable

log = logging.getLogger(__name__)


def client(env: Env):
    """A boto3 S3 client for the configured endpoint."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                    request_checksum_calculation="when_required", response_checksum_validation="when_required",
                    s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=env.s3_endpoint_url or None, config=config)


def upload(env: Env, bucket: str, key: str, body: bytes | str, content_type: str) -> str:
    """Put one object; its s3:// address, or a clear error naming the store."""
    from botocore.exceptions import BotoCoreError, ClientError

    data = body.encode() if isinstance(body, str) else body
    try:
        client(env).put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable(f"could not write s3://{bucket}/{key} at {env.s3_endpoint_url or 'AWS S3'}: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from None
    log.info("published s3://%s/%s (%d bytes)", bucket, key, len(data))
    return f"s3://{bucket}/{key}"


def read(env: Env, bucket: str, key: str) -> bytes | None:
    """An object's bytes, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return client(env).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
