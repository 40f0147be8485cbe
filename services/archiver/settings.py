"""Archiver settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from services.common.settings import Secret, env_secret, env_str
from services.common.skeleton import BaseSettings, load_base


class Settings(msgspec.Struct, frozen=True):
    base: BaseSettings
    object_store_url: str
    s3_endpoint_url: str
    s3_access_key: Secret
    s3_secret_key: Secret
    s3_region: str


def load(environ: Mapping[str, str]) -> Settings:
    return Settings(
        base=load_base(environ, prefix="ARCHIVER", default_port=8084),
        object_store_url=env_str(environ, "OBJECT_STORE_URL", "file://./.data/objects"),
        s3_endpoint_url=env_str(environ, "S3_ENDPOINT_URL", ""),
        s3_access_key=env_secret(environ, "S3_ACCESS_KEY", ""),
        s3_secret_key=env_secret(environ, "S3_SECRET_KEY", ""),
        s3_region=env_str(environ, "S3_REGION", "us-east-1"),
    )
