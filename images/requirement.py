"""`requirement.py WHEEL EXTRA NAME`: print the requirement WHEEL declares for NAME in its extra EXTRA
(`torch==2.14.1`), so an image installs the versions pyproject.toml pins without repeating them."""

import re
import sys
import zipfile
from email.parser import Parser


def requirement(wheel: str, extra: str, name: str) -> str | None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(item for item in archive.namelist() if item.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(metadata).decode())
    for line in message.get_all("Requires-Dist") or []:
        spec, _, marker = (part.strip() for part in line.partition(";"))
        declared = re.match(r"[A-Za-z0-9._-]+", spec)
        if declared and declared.group().lower() == name.lower() and re.search(rf"extra == ['\"]{extra}['\"]", marker):
            return spec
    return None


if __name__ == "__main__":
    wheel, extra, name = sys.argv[1:]
    found = requirement(wheel, extra, name)
    if found is None:
        sys.exit(f"requirement.py: {wheel} declares no {name} in its extra {extra}")
    print(found)
