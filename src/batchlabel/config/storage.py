"""Object-storage settings of a job (credentials never live in a spec)."""

from __future__ import annotations

from pydantic import Field

from batchlabel.config.base import StrictModel


class StorageSpec(StrictModel):
    """Object-storage settings. Credentials come only from the standard AWS environment variables."""

    endpoint_url: str | None = Field(
        None, description="S3 endpoint (e.g. http://127.0.0.1:9000); default: $AWS_ENDPOINT_URL or AWS."
    )
    region: str | None = Field(None, description="S3 region; default: $AWS_DEFAULT_REGION or us-east-1.")
