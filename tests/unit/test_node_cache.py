"""The node-local cache of DVC data versions (fusion/data/node_cache.py) and the storage.uri
checks: a version is pulled once per node however many workers ask at the same time, a pull
that fails leaves nothing behind, and the run's paths are pointed into the copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fusion.config import load_config
from fusion.data.node_cache import DataRef, localise, materialise, tracked_outputs
from fusion.errors import ConfigError, DataError
from tests.conftest import REPO

DVC = [sys.executable, "-m", "dvc"]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> DataRef:
    """A workspace with one DVC-tracked folder pushed to a remote folder."""
    ws = tmp_path_factory.mktemp("ws")
    data = ws / "prepared" / "pairs"
    data.mkdir(parents=True)
    for i in range(3):
        (data / f"{i}.txt").write_text(f"pair {i}\n")
    remote = tmp_path_factory.mktemp("remote")
    for args in (
        ["init", "--no-scm", "-q"],
        ["add", "-q", "prepared/pairs"],
        ["remote", "add", "-d", "r", str(remote)],
    ):
        subprocess.run([*DVC, *args], cwd=ws, check=True, capture_output=True)
    subprocess.run([*DVC, "push", "-q"], cwd=ws, check=True, capture_output=True)
    outs = tracked_outputs(ws)
    assert set(outs) == {"prepared/pairs"}
    return DataRef(str(ws), {"url": str(remote)}, [{"path": "prepared/pairs", **outs["prepared/pairs"]}])


_PULL = """
import json, sys
import fusion.data.node_cache as n
pull = n._pull
def counted(ref, into):
    print("PULL", flush=True)
    pull(ref, into)
n._pull = counted
print(n.materialise(n.DataRef(**json.loads(sys.argv[1])), sys.argv[2]))
"""


def test_two_workers_of_one_node_pull_a_data_version_once_and_read_the_same_copy(pushed, tmp_path):
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PULL, json.dumps(pushed.to_dict()), str(cache)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o.count("PULL") for o in outputs) == 1
    roots = {o[-1] for o in outputs}
    assert roots == {str(cache / "data" / pushed.key)}
    copy = Path(roots.pop()) / "prepared" / "pairs"
    assert sorted(f.read_text() for f in copy.iterdir()) == ["pair 0\n", "pair 1\n", "pair 2\n"]
    # nothing of the throw-away DVC repository is left beside the data
    assert sorted(p.name for p in (cache / "data").iterdir()) == [pushed.key, f"{pushed.key}.lock"]
    assert sorted(p.name for p in (cache / "data" / pushed.key).rglob("*")) == [
        "0.txt",
        "1.txt",
        "2.txt",
        "pairs",
        "prepared",
    ]


def test_a_version_missing_from_the_remote_names_it_and_leaves_nothing_in_the_cache(pushed, tmp_path):
    wrong = DataRef(pushed.workspace, pushed.remote, [{**pushed.outs[0], "md5": "0" * 32 + ".dir"}])
    with pytest.raises(DataError, match=rf"data version {wrong.key} from the DVC remote {pushed.remote['url']}"):
        materialise(wrong, tmp_path)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [f"{wrong.key}.lock"]


def test_paths_into_the_workspace_point_into_the_node_copy_and_others_stay():
    ref = DataRef("/srv/ws", {"url": "s3://b/dvc"}, [])
    cfg = {"train": {"patches": "/srv/ws/prepared/patches/tno", "source": {"path": "/data/tno"}}, "n": 3}
    got = localise({**cfg, "roots": ["/srv/ws", "/srv/wsx/a"]}, ref, Path("/cache/v1"))
    assert got["train"] == {"patches": "/cache/v1/prepared/patches/tno", "source": {"path": "/data/tno"}}
    assert got["roots"] == ["/cache/v1", "/srv/wsx/a"] and got["n"] == 3


@pytest.mark.parametrize(
    ("uri", "why"),
    [("s3://", "names no bucket"), ("gs:///", "names no bucket"), ("s3:/bucket://x", "not a URI")],
)
def test_a_malformed_storage_uri_is_refused_naming_the_key(tmp_path, uri, why):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    with pytest.raises(ConfigError, match=rf"storage\.uri: .*{why}"):
        load_config(tmp_path, overrides=[f"storage.uri={uri}"])


def test_storage_that_cannot_be_written_is_refused_naming_it(tmp_path):
    from fusion.train.storage import check_storage

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"storage\.uri=.*/file/ray: cannot write there"):
        check_storage(str(tmp_path / "file" / "ray"))
    check_storage(str(tmp_path / "ok"))  # a folder it can create
    assert [p.name for p in (tmp_path / "ok").iterdir()] == []  # the probe is gone


def test_a_relative_storage_folder_is_read_from_the_workspace_like_every_path(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(REPO)  # not the folder it is relative to
    cfg = load_config(tmp_path, overrides=["storage.uri=ray-checkpoints"])
    assert cfg.storage.uri == str(tmp_path.resolve() / "ray-checkpoints") and not cfg.storage.object_store
    assert load_config(tmp_path, overrides=["storage.uri=s3://team/ff"]).storage.object_store
