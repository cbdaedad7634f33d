"""An image's root filesystem run as a container runtime runs it, with no runtime: `buildah mount` unpacks it,
a private mount namespace (unshare) makes it read-only with a tmpfs on /tmp (a Job's scratch emptyDir), /proc
and the host's /dev, and chroot starts the command as the image's user with the image's environment. The
network is the host's, so a process inside reaches servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
CACHE = Path(os.environ.get("MODELDEPLOY_CACHE") or Path.home() / ".cache" / "modeldeploy") / "images"

# $1 the root, $2 the number of binds, then source/target/mode triples, then what `env -i` runs: the environment
# as NAME=VALUE words and chroot's command line.
_START = r"""
set -eu
root=$1 binds=$2; shift 2
mount --bind "$root" "$root"
mount -t tmpfs -o mode=1777,size=2g tmpfs "$root/tmp"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
while [ "$binds" -gt 0 ]; do
  case $(realpath -m "$root$2") in
    "$root"/*) ;;
    *) echo "bind target $2 leaves the image's root (a symlink to an absolute path on the way)" >&2; exit 125 ;;
  esac
  mkdir -p "$root$2"
  mount --bind "$1" "$root$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$root$2"; fi
  shift 3; binds=$((binds - 1))
done
mount -o remount,bind,ro "$root"
exec env -i "$@"
"""


def buildah(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(["buildah", "--storage-driver", "vfs", "--root", str(CACHE / "storage"),
                             "--runroot", str(CACHE / "run"), *args],
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def image_config(image: str) -> dict[str, Any]:
    """The image's OCI config: User, Env, WorkingDir, Entrypoint, Cmd, Labels."""
    return json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]


@dataclass(frozen=True)
class Bind:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class Rootfs:
    image: str
    root: Path
    config: dict[str, Any]

    def environment(self, extra: Mapping[str, str] = ()) -> dict[str, str]:
        image_env = dict(item.split("=", 1) for item in self.config.get("Env") or [])
        return {**image_env, **dict(extra)}

    def command(self, argv: Sequence[str], *, env: Mapping[str, str] = (), binds: Sequence[Bind] = (),
                user: str | None = None) -> list[str]:
        """The host command that runs `argv` in this root, read-only, as `user` (default: the image's)."""
        words = [f"{name}={value}" for name, value in self.environment(env).items()]
        triples = [word for bind in binds for word in (str(bind.source), bind.target, "ro" if bind.read_only else "rw")]
        user = user or self.config.get("User") or "0:0"
        workdir = self.config.get("WorkingDir") or "/"
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _START, "start",
                str(self.root), str(len(binds)), *triples, *words,
                CHROOT, f"--userspec={user}", str(self.root), "/bin/sh", "-c", 'cd "$0" && exec "$@"', workdir, *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 600, **options: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv, **options), capture_output=True, text=True, timeout=timeout,
                              check=False)


@contextmanager
def unpacked(image: str) -> Iterator[Rootfs]:
    """A container of `image`, its root filesystem mounted on the host, removed afterwards."""
    container = buildah("from", "--quiet", image, timeout=1800).strip()
    try:
        root = Path(buildah("mount", container).strip())
        yield Rootfs(image, root, image_config(image))
    finally:
        buildah("umount", container)
        buildah("rm", container)
