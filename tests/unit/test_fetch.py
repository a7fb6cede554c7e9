"""`fusion data fetch` against a real HTTP server on loopback serving local archives:
checksum verified, atomic unpack, clear errors, nothing left behind on failure."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from fusion.data.fetch import LOCK, fetch, load_catalogue
from fusion.data.sources import load_source
from fusion.errors import ConfigError, DataError


@pytest.fixture
def served(tmp_path):
    """A TNO-layout dataset of 3 real pairs zipped under one top folder, and a tarball of
    it, served by http.server on 127.0.0.1; yields (base url, folder served)."""
    from tests.conftest import SHARED

    root = tmp_path / "www"
    root.mkdir()
    tno = SHARED / "data/irvis/TNO42"
    with zipfile.ZipFile(root / "tno.zip", "w") as zf:
        for name in ("01", "02", "03"):
            for mod in ("ir", "vi"):
                zf.write(tno / mod / f"{name}.png", f"TNO-main/{mod}/{name}.png")
    with tarfile.open(root / "tno.tar.gz", "w:gz") as tf:
        tf.add(tno / "ir/01.png", "TNO-main/ir/01.png")
        tf.add(tno / "vi/01.png", "TNO-main/vi/01.png")
    with zipfile.ZipFile(root / "evil.zip", "w") as zf:
        zf.writestr("../outside.txt", b"x")
    (root / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def catalogue(tmp_path, base, root, **extra) -> Path:
    sha = lambda f: hashlib.sha256((root / f).read_bytes()).hexdigest()  # noqa: E731
    entries = {
        "tno": {"url": f"{base}/tno.zip", "sha256": sha("tno.zip"), "archive": "zip", "strip": 1, "layout": "tno"},
        "tno-tar": {
            "url": f"{base}/tno.tar.gz",
            "sha256": sha("tno.tar.gz"),
            "archive": "tar",
            "strip": 1,
            "layout": "tno",
        },
        "unpinned": {"url": f"{base}/tno.zip", "sha256": None, "archive": "zip", "strip": 1, "layout": "tno"},
        "evil": {"url": f"{base}/evil.zip", "sha256": sha("evil.zip"), "archive": "zip"},
        "broken": {"url": f"{base}/broken.zip", "sha256": sha("broken.zip"), "archive": "zip"},
        "missing": {"url": f"{base}/nope.zip", "sha256": "0" * 64},
        **extra,
    }
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


def test_fetch_verifies_unpacks_and_the_result_loads_as_its_layout(served, tmp_path):
    base, root = served
    entries = load_catalogue(catalogue(tmp_path, base, root))
    seen = []
    record = fetch(entries["tno"], tmp_path / "data/tno", progress=lambda done, total: seen.append((done, total)))
    assert record["verified"] and record["sha256"] == entries["tno"].sha256
    assert seen[-1] == ((root / "tno.zip").stat().st_size,) * 2
    pairs = load_source({"layout": "tno", "path": str(tmp_path / "data/tno")})
    assert [p.id for p in pairs] == ["01", "02", "03"]
    assert json.loads((tmp_path / "data/tno" / LOCK).read_text())["url"] == f"{base}/tno.zip"
    assert (
        len(load_source({"layout": "tno", "path": str(fetch(entries["tno-tar"], tmp_path / "t") and tmp_path / "t")}))
        == 1
    )
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["tno"]  # no temporary files left


def test_checksum_mismatch_and_bad_archives_leave_nothing(served, tmp_path):
    base, root = served
    entries = load_catalogue(catalogue(tmp_path, base, root))
    good = fetch(entries["tno"], tmp_path / "d/tno")
    (root / "tno.zip").write_bytes((root / "tno.zip").read_bytes() + b"tampered")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "d").rglob("*"))
    with pytest.raises(DataError, match=r"tno\.zip: sha256 [0-9a-f]{64} does not match the expected " + good["sha256"]):
        fetch(entries["tno"], tmp_path / "d/tno")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "d").rglob("*")) == before  # old copy intact
    with pytest.raises(DataError, match=r"'\.\./outside\.txt' would be written outside"):
        fetch(entries["evil"], tmp_path / "d/evil")
    with pytest.raises(DataError, match=r"not a valid zip archive"):
        fetch(entries["broken"], tmp_path / "d/broken")
    with pytest.raises(DataError, match=r"nope\.zip: HTTP 404"):
        fetch(entries["missing"], tmp_path / "d/missing")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["tno"] and not (tmp_path / "outside.txt").exists()


def test_unpinned_entry_needs_a_checksum_or_trust_then_stays_pinned(served, tmp_path):
    base, root = served
    entries = load_catalogue(catalogue(tmp_path, base, root))
    with pytest.raises(ConfigError, match=r"unpinned: the catalogue has no sha256 .* --sha256 HEX .* --trust"):
        fetch(entries["unpinned"], tmp_path / "u")
    with pytest.raises(DataError, match="does not match"):
        fetch(entries["unpinned"], tmp_path / "u", sha256="f" * 64)
    record = fetch(entries["unpinned"], tmp_path / "u", trust=True)
    assert not record["verified"] and record["sha256"] == entries["tno"].sha256
    (root / "tno.zip").write_bytes((root / "tno.zip").read_bytes() + b"changed upstream")
    with pytest.raises(DataError, match="does not match"):  # the pin in fetch.lock.json holds
        fetch(entries["unpinned"], tmp_path / "u", trust=True)


def test_cli_fetch_lists_fetches_and_reports_errors(served, tmp_path):
    base, root = served
    cat = catalogue(tmp_path, base, root)
    cli = [sys.executable, "-m", "fusion", "data", "fetch", "--catalogue", str(cat)]
    listing = subprocess.run(cli, capture_output=True, text=True)
    assert listing.returncode == 0 and "tno-tar" in listing.stdout
    done = subprocess.run([*cli, "tno", "--dest", str(tmp_path / "cli")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout and "layout: tno" in done.stdout
    bad = subprocess.run([*cli, "tnoo", "--dest", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "tnoo: not in the catalogue; available:" in bad.stderr
    (tmp_path / "bad.yaml").write_text("x: {url: http://a, sha256: ABC}\n")
    bad = subprocess.run(
        [*cli[:-1], str(tmp_path / "bad.yaml"), "x", "--dest", str(tmp_path / "y")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "x.sha256: expected 64 lowercase hex digits" in bad.stderr


def test_builtin_catalogue_is_valid_and_every_layout_is_known():
    from fusion.data.sources import LAYOUTS

    entries = load_catalogue()
    assert {"duts-tr", "roadscene", "msrs"} <= set(entries)
    assert all(e.layout in LAYOUTS and e.url.startswith(("http://", "https://")) for e in entries.values())


def test_fetch_never_deletes_files_it_did_not_create(served, tmp_path):
    base, root = served
    entries = load_catalogue(catalogue(tmp_path, base, root))
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("a user's notes")
    with pytest.raises(
        ConfigError, match=r"--dest .*mine: holds 1 file\(s\) fetch did not create \(notes.txt\).*--overwrite"
    ):
        fetch(entries["tno"], dest)
    assert (dest / "notes.txt").read_text() == "a user's notes" and sorted(p.name for p in dest.iterdir()) == [
        "notes.txt"
    ]
    # a folder an earlier fetch made is refreshed in place; one a user then added to is refused
    fetch(entries["tno"], tmp_path / "ok")
    fetch(entries["tno"], tmp_path / "ok")
    (tmp_path / "ok" / "ir" / "mine.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"ir/mine.png"):
        fetch(entries["tno"], tmp_path / "ok")
    fetch(entries["tno"], dest, overwrite=True)  # asked for by flag
    assert not (dest / "notes.txt").exists()
    cli = [sys.executable, "-m", "fusion", "data", "fetch", "--catalogue", str(catalogue(tmp_path, base, root))]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("keep")
    refused = subprocess.run([*cli, "tno", "--dest", str(tmp_path / "c")], capture_output=True, text=True)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    assert (tmp_path / "c" / "keep.txt").read_text() == "keep"
