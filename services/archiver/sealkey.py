"""The archiver's X25519 sealing key pair, for operators: `python -m services.archiver.sealkey [KID]` prints a
new ARCHIVER_SEAL_KEY (the archiver's secret) and its PROXY_ARCHIVE_PUBLIC_KEY (the proxies'); `... public`
reads an ARCHIVER_SEAL_KEY value (or a `ARCHIVER_SEAL_KEY=...` line) on stdin and prints the public half of
its active (first) key."""

from __future__ import annotations

import sys
from typing import TextIO

from services.common.sealing import InvalidSealKey, PrivateSealKey, parse_private_keys

USAGE = "usage: python -m services.archiver.sealkey [KID]   |   python -m services.archiver.sealkey public < key"


def main(argv: list[str], stdin: TextIO | None = None) -> int:
    if argv[:1] == ["public"]:
        text = (stdin or sys.stdin).read().strip().removeprefix("ARCHIVER_SEAL_KEY=")
        try:
            ring = parse_private_keys(text, variable="ARCHIVER_SEAL_KEY")
        except InvalidSealKey as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"PROXY_ARCHIVE_PUBLIC_KEY={ring.active.public.text()}")
        return 0
    if len(argv) > 1 or argv[:1] in (["-h"], ["--help"]):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        key = PrivateSealKey.generate(argv[0] if argv else "s1")
    except InvalidSealKey as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"ARCHIVER_SEAL_KEY={key.text()}")
    print(f"PROXY_ARCHIVE_PUBLIC_KEY={key.public.text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
