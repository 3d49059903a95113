from pathlib import Path

from dvc_data.hashfile.build import build
from dvc_data.hashfile.db import HashFileDB
from dvc_objects.fs.local import LocalFileSystem

from jobs.io.versioning import folder_hash, record_from_text


def test_the_folder_hash_is_the_one_dvc_computes(tmp_path):
    # given a folder of files in subfolders
    for rel, data in {"dt=2026-01-01/part-0.parquet": b"a" * 1000, "dt=2026-01-02/part-0.parquet": b"b" * 10,
                      "_window.json": b"{}"}.items():
        (tmp_path / "snap" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "snap" / rel).write_bytes(data)
    # when both hash it
    ours = folder_hash(tmp_path / "snap")
    fs = LocalFileSystem()
    _, meta, obj = build(HashFileDB(fs, str(tmp_path / "db")), str(tmp_path / "snap"), fs, "md5", dry_run=True)
    # then they agree
    assert ours == (obj.hash_info.value, meta.size, meta.nfiles)


def test_a_stored_record_is_read_from_a_dvc_file_or_from_dvc_lock():
    dvc_file = "outs:\n- md5: abc.dir\n  size: 10\n  nfiles: 2\n  hash: md5\n  path: snap\n"
    lock = ("schema: '2.0'\nstages:\n  snapshot:\n    cmd: x\n    outs:\n    - path: data/snapshot\n"
            "      md5: def.dir\n      size: 5\n      nfiles: 1\n")
    assert record_from_text(dvc_file, "data/snap.dvc", "data/snap")["md5"] == "abc.dir"
    assert record_from_text(lock, "dvc.lock", "data/snapshot")["md5"] == "def.dir"
    assert Path("x")
