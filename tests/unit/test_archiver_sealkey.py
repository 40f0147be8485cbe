"""`python -m services.archiver.sealkey`: a key pair whose halves match, and the public half of a given key."""

from __future__ import annotations

import io

import pytest

from services.archiver import sealkey
from services.common.sealing import parse_private_keys, parse_public_key


def test_new_pair_halves_match_and_public_reads_it_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert sealkey.main(["k2"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    ring = parse_private_keys(lines["ARCHIVER_SEAL_KEY"], variable="ARCHIVER_SEAL_KEY")
    public = parse_public_key(lines["PROXY_ARCHIVE_PUBLIC_KEY"], variable="PROXY_ARCHIVE_PUBLIC_KEY")
    assert ring.active.kid == public.kid == "k2" and ring.active.public.raw == public.raw
    assert sealkey.main(["public"], io.StringIO(f"ARCHIVER_SEAL_KEY={lines['ARCHIVER_SEAL_KEY']}\n")) == 0
    assert capsys.readouterr().out.strip() == f"PROXY_ARCHIVE_PUBLIC_KEY={lines['PROXY_ARCHIVE_PUBLIC_KEY']}"
    assert sealkey.main(["public"], io.StringIO("k1:nonsense")) == 2 and "ARCHIVER_SEAL_KEY" in capsys.readouterr().err
