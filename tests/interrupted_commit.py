"""Commits outputs and stalls inside the upload of the last one, so a test can kill it there.

usage: interrupted_commit.py STORE_URI ENDPOINT KEY FILE...
Prints "uploading <name>" once the last file's upload is under way, then hangs in it.
"""

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from modeldeploy.manifest import commit
from modeldeploy.store import open_store

store_uri, endpoint, key, *files = sys.argv[1:]
paths = {Path(name).name: Path(name) for name in files}
last = max(paths)


def stall_in_last_upload(name: str, transferred: int) -> None:
    if name == last:
        print(f"uploading {name}", flush=True)
        time.sleep(600)


commit(open_store(store_uri, endpoint=endpoint or None), key, "convert", paths, datetime.now(UTC),
       progress=stall_in_last_upload)
