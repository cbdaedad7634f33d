"""Fetching what the user points at: weights, model files, code and datasets, by URI."""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from modeldeploy.store import NotFound, S3Store, access_problem, sha256_file

from modeldeploy_jobs.limits import DATASET_BYTES, DATASET_FILES
from modeldeploy_jobs.stage import StageError, StageReason

DOWNLOAD_TIMEOUT_SECONDS = 60  # without a byte for this long, a download has failed (and is retried)
# Answers that say the URI itself is wrong: retrying cannot help. Any other failure may pass.
_WRONG_URI_STATUSES = {400, 401, 403, 404, 410}


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme == "":
        return Path(uri)
    return None


def _bucket_and_key(uri: str) -> tuple[S3Store, str]:
    parsed = urlparse(uri)
    return S3Store(parsed.netloc), parsed.path.lstrip("/")


def fetch_source(uri: str, destination: Path, sha256: str | None = None) -> Path:
    """A local file with the content at uri; checked against sha256 when given."""
    local = _local_path(uri)
    if local is not None:
        if not local.is_file():
            raise StageError(StageReason.SOURCE_NOT_FOUND, f"{uri} does not exist or is not a file")
        path = local
    elif urlparse(uri).scheme == "s3":
        store, key = _bucket_and_key(uri)
        try:
            store.get_file(key, destination)
        except ValueError:
            raise StageError(StageReason.SOURCE_INVALID, f"{uri}: the key is not a plain path") from None
        except Exception as error:  # noqa: BLE001 - classified by _store_failure, which returns any other as is
            raise _store_failure(uri, error) from None
        path = destination
    elif urlparse(uri).scheme in ("http", "https"):
        _download(uri, destination)
        path = destination
    else:
        raise StageError(StageReason.SOURCE_INVALID,
                         f"{uri}: unsupported scheme (use s3://, file://, http(s):// or a path)")
    if sha256 is not None and (actual := sha256_file(path)) != sha256:
        raise StageError(StageReason.CHECKSUM_MISMATCH, f"{uri}: sha256 is {actual}, the spec expects {sha256}")
    return path


def inside(root: Path, name: str) -> Path:
    """root/name, for a name that came from elsewhere (an object key, an archive member, a manifest).

    Only a plain relative name is taken: parts that are neither empty, `.` nor `..`, no leading `/` and no
    backslash, so the path stays under root whatever the name, with no symlink or normalisation involved.
    """
    parts = name.split("/")
    if not name or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{name!r} is not a plain relative name")
    return root.joinpath(*parts)


def fetch_tree(uri: str, destination: Path) -> Path:
    """A local directory with every object under the directory uri (s3://bucket/prefix is the folder prefix/).

    The listing is checked before anything is downloaded: the dataset caps (files, bytes), and every object's
    name: one that is not a plain relative path under the folder refuses the whole tree, and nothing is written.
    """
    local = _local_path(uri)
    if local is not None:
        if not local.is_dir():
            raise StageError(StageReason.SOURCE_NOT_FOUND, f"{uri} does not exist or is not a directory")
        return local
    if urlparse(uri).scheme != "s3":
        raise StageError(StageReason.SOURCE_INVALID, f"{uri}: a directory must be s3://bucket/prefix/ or a local directory")
    store, folder = _bucket_and_key(uri)
    folder = folder.strip("/")
    try:
        sizes = store.sizes(folder)
    except ValueError:
        raise StageError(StageReason.SOURCE_INVALID,
                         f"{uri}: the prefix is not a plain path (empty, '.' or '..' parts)") from None
    except Exception as error:  # noqa: BLE001 - classified by _store_failure, which returns any other as is
        raise _store_failure(uri, error) from None
    if not sizes:
        raise StageError(StageReason.SOURCE_NOT_FOUND, f"{uri} holds no objects")
    DATASET_FILES.check(len(sizes), f"{uri} has")  # before anything is downloaded
    DATASET_BYTES.check(sum(sizes.values()), f"{uri} has")
    paths = {}
    for name in sorted(sizes):
        try:
            paths[name] = inside(destination, name[len(folder) + 1 :] if folder else name)
        except ValueError:
            raise StageError(StageReason.SOURCE_INVALID, f"s3://{store.bucket}/{name}: the object's name is not a "
                                                         f"plain path under {uri}, so it cannot be fetched safely") from None
    try:
        for name, path in paths.items():
            store.get_file(name, path)
    except Exception as error:  # noqa: BLE001 - classified by _store_failure, which returns any other as is
        raise _store_failure(uri, error) from None
    return destination


def _store_failure(uri: str, error: Exception) -> Exception:
    """A StageError for a failed S3 read: an object or bucket not there, or access refused, is the URI's (or its
    credentials') fault; the rest may pass. Any other error is returned as it is."""
    if isinstance(error, NotFound):
        return StageError(StageReason.SOURCE_NOT_FOUND, f"{uri} does not exist")
    problem = access_problem(uri, error)
    if problem is None:
        return error
    status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status in _WRONG_URI_STATUSES:
        return StageError(StageReason.SOURCE_NOT_FOUND, problem)
    return StageError(StageReason.SOURCE_UNREACHABLE, problem)


def _download(uri: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False) as handle:
        try:
            with urllib.request.urlopen(uri, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                shutil.copyfileobj(response, handle)
        except urllib.error.HTTPError as error:
            Path(handle.name).unlink(missing_ok=True)
            wrong = error.code in _WRONG_URI_STATUSES
            raise StageError(StageReason.SOURCE_NOT_FOUND if wrong else StageReason.SOURCE_UNREACHABLE,
                             f"{uri}: the server answered {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            Path(handle.name).unlink(missing_ok=True)
            cause = getattr(error, "reason", None) or error
            raise StageError(StageReason.SOURCE_UNREACHABLE, f"{uri}: the download failed ({type(cause).__name__}: "
                                                             f"{cause})") from None
    Path(handle.name).replace(destination)

