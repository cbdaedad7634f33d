"""The artifact store: `file://` directories and `s3://` buckets behind one small interface.

Objects are written whole or not at all (a temporary file renamed into place; a single
PUT or a completed multipart upload), `create` refuses to overwrite (the commit marker
is written once), and every read can verify a sha256 before the file is handed over.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlparse

Progress = Callable[[int], None]  # called with the number of bytes just transferred
CHUNK = 1024 * 1024


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class ChecksumMismatch(StoreError):
    pass


class Store(Protocol):
    uri: str
    # What the store is, for whoever caches what it holds: two stores with one URI but another endpoint or other
    # credentials are other stores (a tenant must not read, nor plant, what another's store holds).
    identity: str

    def uri_of(self, name: str) -> str: ...

    def put_file(self, name: str, source: Path, progress: Progress | None = None) -> str:
        """Upload a local file; returns its sha256."""

    def create(self, name: str, data: bytes) -> None:
        """Write a small object that must not exist yet (raises AlreadyExists)."""

    def put_bytes(self, name: str, data: bytes) -> None:
        """Write or replace a small object."""

    def get_bytes(self, name: str) -> bytes: ...

    def get_file(self, name: str, destination: Path, sha256: str | None = None) -> None:
        """Download to destination; with sha256 the file appears only if it matches."""

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def folders(self, prefix: str) -> set[str]:
        """The names of the folders directly under prefix (on S3, one listing request per thousand)."""

    def delete_prefix(self, prefix: str) -> int: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_hashing(source: IO[bytes], target: IO[bytes], progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: source.read(CHUNK), b""):
        digest.update(chunk)
        target.write(chunk)
        if progress:
            progress(len(chunk))
    return digest.hexdigest()


def _check(uri: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise ChecksumMismatch(
            f"{uri}: sha256 mismatch (expected {expected}, got {actual}); the object is corrupt or was modified"
        )


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid object name {name!r}")
    return name


class FileStore:
    """A directory; writes go to a temporary file in the same directory and are renamed into place."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.uri = self.root.as_uri()
        self.identity = self.uri

    def _path(self, name: str) -> Path:
        return self.root / _check_name(name)

    def uri_of(self, name: str) -> str:
        return self._path(name).as_uri()

    def _write_atomically(
        self, name: str, write: Callable[[IO[bytes]], str | None], exclusive: bool = False
    ) -> str | None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Closed by the `with` below; the name outlives the handle until it is linked or removed.
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115
            dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False)
        try:
            with handle:
                result = write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            if exclusive:
                try:
                    os.link(handle.name, path)  # atomic, and fails if the name is taken
                except FileExistsError:
                    raise AlreadyExists(f"{self.uri_of(name)} already exists") from None
            else:
                os.replace(handle.name, path)
            return result
        finally:
            Path(handle.name).unlink(missing_ok=True)

    def put_file(self, name: str, source: Path, progress: Progress | None = None) -> str:
        with source.open("rb") as reader:
            digest = self._write_atomically(name, lambda writer: _copy_hashing(reader, writer, progress))
        assert digest is not None
        return digest

    def create(self, name: str, data: bytes) -> None:
        self._write_atomically(name, _writing(data), exclusive=True)

    def put_bytes(self, name: str, data: bytes) -> None:
        self._write_atomically(name, _writing(data))

    def get_bytes(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.uri_of(name)} does not exist") from None

    def get_file(self, name: str, destination: Path, sha256: str | None = None) -> None:
        try:
            reader = self._path(name).open("rb")
        except FileNotFoundError:
            raise NotFound(f"{self.uri_of(name)} does not exist") from None
        with reader:
            _download(reader, destination, lambda digest: _check(self.uri_of(name), sha256, digest))

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        found = (path for path in base.rglob("*") if path.is_file() and not path.name.endswith(".partial"))
        return sorted(path.relative_to(self.root).as_posix() for path in found)

    def folders(self, prefix: str) -> set[str]:
        base = self._path(prefix)
        return {path.name for path in base.iterdir() if path.is_dir()} if base.is_dir() else set()

    def delete_prefix(self, prefix: str) -> int:
        names = self.list(prefix)
        for name in names:
            self._path(name).unlink()
        base = self._path(prefix) if prefix else self.root
        if prefix and base.is_dir():
            shutil.rmtree(base, ignore_errors=True)
        return len(names)


def _writing(data: bytes) -> Callable[[IO[bytes]], None]:
    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    return write


def _download(reader: IO[bytes], destination: Path, verify: Callable[[str], None]) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the `with` below; the name outlives it
        dir=destination.parent, prefix=f".{destination.name}.", delete=False)
    try:
        with handle:
            digest = _copy_hashing(reader, handle)
        verify(digest)
        os.replace(handle.name, destination)
    finally:
        Path(handle.name).unlink(missing_ok=True)


class S3Store:
    """A bucket and prefix, through boto3.

    Credentials, region and endpoint come from the standard AWS environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL_S3, ...); `endpoint`
    overrides the endpoint. Checksums are sent and validated only when an operation requires
    them, which MinIO, Ceph RGW and OBS accept; integrity is ours, by sha256.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        credentials: Mapping[str, str] | None = None,
        connections: int = 10,
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=connections,
            # Path-style addressing works with every S3-compatible server behind a custom endpoint.
            s3={"addressing_style": "path"} if endpoint or _endpoint_from_environment() else None,
        )
        keys = credentials or {}  # explicit credentials (a Secret's data) instead of the environment
        self.identity = _identity(endpoint or _endpoint_from_environment() or "aws", region, bucket, self.prefix, keys)
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            config=config,
            aws_access_key_id=keys.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=keys.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=keys.get("AWS_SESSION_TOKEN"),
        )

    def _key(self, name: str) -> str:
        _check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri_of(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def put_file(self, name: str, source: Path, progress: Progress | None = None) -> str:
        digest = sha256_file(source)
        self.client.upload_file(
            str(source), self.bucket, self._key(name), ExtraArgs={"Metadata": {"sha256": digest}}, Callback=progress
        )
        return digest

    def create(self, name: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        if self.exists(name):
            raise AlreadyExists(f"{self.uri_of(name)} already exists")
        try:
            # Servers that know conditional writes also close the race between the check and the put.
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data, IfNoneMatch="*")
        except ClientError as error:
            if _error_code(error) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise AlreadyExists(f"{self.uri_of(name)} already exists") from None
            raise

    def put_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def _get(self, name: str):
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        except ClientError as error:
            if _error_code(error) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"{self.uri_of(name)} does not exist") from None
            raise

    def get_bytes(self, name: str) -> bytes:
        body = self._get(name)
        with body:
            return body.read()

    def get_file(self, name: str, destination: Path, sha256: str | None = None) -> None:
        body = self._get(name)
        with body:
            _download(body, destination, lambda digest: _check(self.uri_of(name), sha256, digest))

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as error:
            if _error_code(error) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        """The keys in the folder prefix (a key `prefix-other/x` is not in folder `prefix`), with their sizes."""
        folder = self._key(prefix) if prefix else self.prefix
        full = f"{folder}/" if folder else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield item["Key"], item.get("Size", 0)

    def _keys(self, prefix: str) -> Iterator[str]:
        return (key for key, _ in self._objects(prefix))

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """The names in the folder prefix with their sizes in bytes, as the listing gives them."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        return {key[strip:]: size for key, size in self._objects(prefix)}

    def folders(self, prefix: str) -> set[str]:
        base = f"{self._key(prefix)}/"
        paginator = self.client.get_paginator("list_objects_v2")
        return {common["Prefix"][len(base):].rstrip("/")
                for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/")
                for common in page.get("CommonPrefixes", [])}

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self._keys(prefix))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)


def load_s3_model() -> None:
    """Load botocore's S3 service model now: the first S3 store opened would otherwise spend a quarter second on it.

    The client is unsigned, so nothing looks for credentials, and it is dropped: the model stays cached.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    boto3.client("s3", region_name="us-east-1", config=Config(signature_version=UNSIGNED))


_IDENTITY_KEY = secrets.token_bytes(32)  # identities are compared within one process, never stored


def _identity(endpoint: str, region: str | None, bucket: str, prefix: str, credentials: Mapping[str, str]) -> str:
    """The endpoint, region, bucket and prefix, and a keyed digest of the credentials (none: the environment's)."""
    principal = hmac.new(_IDENTITY_KEY, digestmod=hashlib.sha256)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        principal.update(credentials.get(name, "").encode() + b"\0")
    who = principal.hexdigest() if credentials else "environment"
    return f"s3 {endpoint} {region or '-'} {bucket}/{prefix} {who}"


_HINTS = {
    "AccessDenied": "the credentials may not use this bucket and prefix",
    "InvalidAccessKeyId": "the access key is unknown to the server: check the credentials",
    "SignatureDoesNotMatch": "the secret key is wrong: check the credentials",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "NoSuchBucket": "the bucket does not exist",
}


def access_problem(uri: str, error: BaseException) -> str | None:
    """What keeps the store at uri from being used, for a user to read; None if error is no store access error.

    Only the server's error code is quoted, never its message: the server may be anybody's.
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(error, ClientError):
        code = _error_code(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        safe_code = code if code.isalnum() and len(code) <= 64 else "an error"
        hint = _HINTS.get(code)
        return f"{uri}: the server answered {status} {safe_code}" + (f" ({hint})" if hint else "")
    if isinstance(error, NoCredentialsError):
        return (f"{uri}: no credentials to use it with (set spec.artifacts.secretRef to a Secret holding "
                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    if isinstance(error, BotoCoreError):
        return f"{uri}: {type(error).__name__}: the server cannot be reached or did not answer"
    if isinstance(error, StoreError):
        return f"{uri}: {error}"
    return None


def _error_code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _endpoint_from_environment() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def open_store(
    uri: str, endpoint: str | None = None, region: str | None = None, credentials: Mapping[str, str] | None = None,
    connections: int = 10,
) -> Store:
    """The store behind a `file://` or `s3://` URI (a plain path is a directory).

    `connections` bounds the requests an S3 store sends at once (botocore's connection pool).
    """
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{uri}: an s3 URI needs a bucket, as in s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path, endpoint=endpoint, region=region, credentials=credentials,
                       connections=connections)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{uri}: a file URI needs an absolute path, as in file:///data/artifacts")
        return FileStore(Path(parsed.path))
    if parsed.scheme == "":
        return FileStore(Path(uri))
    raise ValueError(f"{uri}: unsupported store scheme {parsed.scheme!r} (use s3:// or file://)")
