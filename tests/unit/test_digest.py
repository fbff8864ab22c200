"""aicert.digest: hashing real files in tmp_path, and the manifest format."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from aicert.digest import (
    INPUT_EXCLUDED,
    OUTPUT_EXCLUDED,
    DigestError,
    FileEntry,
    Manifest,
    ManifestError,
    PathPatterns,
    PatternError,
    SymlinkPolicy,
    check_relative_path,
    hash_file,
    hash_tree,
    manifest_root,
)
from aicert.digest.hashing import _CHUNK_MAX

MiB = 1 << 20


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _rand(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _independent_root(entries: list[dict[str, Any]]) -> str:
    ordered = sorted(entries, key=lambda e: e["path"])
    return hashlib.sha256(rfc8785.dumps(ordered)).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    _write(root / "config.json", b'{"layers": 2}\n')
    _write(root / "empty", b"")
    _write(root / "weights" / "shard-1.bin", _rand(3 * MiB + 17, 1))
    _write(root / "weights" / "shard-2.bin", _rand(200_000, 2))
    _write(root / "tokenizer" / "vocab.txt", b"a\nb\nc\n")
    (root / "empty-dir" / "nested").mkdir(parents=True)
    return root


# --------------------------------------------------------------------------------------------------
# digests and root


def test_root_agrees_with_independent_computation(tree: Path) -> None:
    manifest = hash_tree(tree)
    expected = []
    for p in sorted(tree.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            expected.append(
                {
                    "path": p.relative_to(tree).as_posix(),
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    assert [f.to_json() for f in manifest.files] == sorted(expected, key=lambda e: e["path"])
    assert manifest.root == _independent_root(expected)
    assert manifest_root(manifest.files) == manifest.root
    assert manifest.file_count == 5
    assert manifest.total_bytes == sum(e["size"] for e in expected)


AWKWARD_NAMES = [
    "plain.txt",
    'quote"d',
    "back\\slash",
    "new\nline",
    "tab\tand\rcr",
    "ctl\x01\x1f\x7f",
    "caf\u00e9",
    "\u65e5\u672c\u8a9e",
    "emoji-\U0001f642",
    "line-sep\u2028para-sep\u2029",
    "private-\ue000",
    "dir/sub dir/file with spaces",
]


def test_canonical_encoding_matches_rfc8785_on_awkward_names() -> None:
    files = [
        FileEntry(name, i * 1000 + 7, hashlib.sha256(name.encode()).hexdigest(), symlink=i % 3 == 0)
        for i, name in enumerate(AWKWARD_NAMES)
    ]
    files.append(FileEntry("big", 2**53 - 1, "0" * 64))
    expected = _independent_root([f.to_json() for f in files])
    assert manifest_root(files) == expected
    assert Manifest.from_files(files).root == expected


def test_awkward_file_names_on_disk(tmp_path: Path) -> None:
    for i, name in enumerate(AWKWARD_NAMES):
        _write(tmp_path / name, _rand(i * 100, i))
    manifest = hash_tree(tmp_path)
    assert sorted(f.path for f in manifest.files) == sorted(AWKWARD_NAMES)
    assert manifest.root == _independent_root([f.to_json() for f in manifest.files])
    assert Manifest.from_json(json.loads(json.dumps(manifest.to_json()))) == manifest


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")
def test_file_digests_agree_with_sha256sum(tmp_path: Path) -> None:
    sizes = [
        0,
        1,
        4095,
        65_537,
        MiB + 1,
        _CHUNK_MAX - 1,  # the largest file read in one go
        _CHUNK_MAX,  # the smallest pipelined file
        _CHUNK_MAX + 1,
        3 * _CHUNK_MAX,
        2 * _CHUNK_MAX + 12_345,
    ]
    for i, size in enumerate(sizes):
        _write(tmp_path / f"f{i:02d}-{size}", _rand(size, i))
    out = subprocess.run(
        ["sha256sum", *sorted(p.name for p in tmp_path.iterdir())],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    expected = {name: digest for digest, name in (line.split("  ", 1) for line in out.splitlines())}
    manifest = hash_tree(tmp_path, workers=3)
    assert {f.path: f.sha256 for f in manifest.files} == expected
    assert {f.path: f.size for f in manifest.files} == {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    for p in tmp_path.iterdir():
        assert hash_file(p) == (p.stat().st_size, expected[p.name])


def test_deterministic_across_worker_counts(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(60):
        _write(tmp_path / f"d{i % 5}" / f"f{i:03d}", rng.randbytes(rng.choice([0, 10, 5000, 300_000])))
    _write(tmp_path / "big.bin", _rand(2 * _CHUNK_MAX + 5, 9))
    one = hash_tree(tmp_path, workers=1)
    four = hash_tree(tmp_path, workers=4)
    assert one == four
    assert one.to_json() == four.to_json()
    assert one.file_count == 61


def test_single_file_root(tmp_path: Path) -> None:
    f = _write(tmp_path / "model.safetensors", _rand(12_345))
    manifest = hash_tree(f)
    assert [e.to_json() for e in manifest.files] == [
        {"path": "model.safetensors", "size": 12_345, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    ]


def test_empty_tree_and_empty_dirs(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    manifest = hash_tree(tmp_path)
    assert manifest.files == ()
    assert manifest.root == hashlib.sha256(b"[]").hexdigest()


def test_exclude_skips_paths_and_subtrees(tree: Path) -> None:
    _write(tree / "manifest.json", b"{}")
    manifest = hash_tree(tree, exclude={"manifest.json", "weights"})
    paths = [f.path for f in manifest.files]
    assert paths == ["config.json", "empty", "tokenizer/vocab.txt"]


def test_an_input_is_measured_whole_an_output_leaves_out_its_manifest(tree: Path) -> None:
    # a manifest.json in an input is data the training reads: it must be in the input's root
    _write(tree / "manifest.json", b'{"labels": "poisoned"}')
    _write(tree / "sub" / "manifest.json", b"{}")
    as_input = [f.path for f in hash_tree(tree, exclude=INPUT_EXCLUDED).files]
    as_output = [f.path for f in hash_tree(tree, exclude=OUTPUT_EXCLUDED).files]
    assert "manifest.json" in as_input and "manifest.json" not in as_output
    assert set(as_input) - set(as_output) == {"manifest.json"}  # only the top-level one, only for outputs


def test_skip_leaves_out_files_links_and_special_files_it_accepts(tree: Path) -> None:
    _write(tree / ".git" / "objects" / "ab", b"blob")
    os.symlink("objects", tree / ".git" / "link")
    os.mkfifo(tree / ".git" / "fifo")
    asked: list[str] = []

    def skip(path: str) -> bool:
        asked.append(path)
        return path.startswith(".git/")

    manifest = hash_tree(tree, skip=skip)
    assert not any(f.path.startswith(".git/") for f in manifest.files)
    assert manifest.root == hash_tree(tree, exclude={".git"}).root
    assert ".git" not in asked and "weights/shard-1.bin" in asked  # asked about files, never directories
    with pytest.raises(DigestError, match="is a FIFO"):
        hash_tree(tree, skip=lambda path: path in (".git/objects/ab", ".git/link"))


def test_skip_applies_to_a_single_file_root(tree: Path) -> None:
    assert hash_tree(tree / "config.json", skip=lambda path: path == "config.json").files == ()


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("README.md", ["README.md"], ["docs/README.md", "README.mdx", "xREADME.md"]),
        ("**/README.md", ["README.md", "a/README.md", "a/b/README.md"], ["a/README.md.bak"]),
        (".git/**", [".git/config", ".git/objects/ab/cd"], [".git", ".gitignore", "sub/.git/config"]),
        ("*.txt", ["a.txt", ".hidden.txt"], ["d/a.txt", "a.txt.gz"]),
        ("logs/*.log", ["logs/a.log"], ["logs/x/a.log", "a.log"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "b"]),
        ("f?le", ["file", "fxle"], ["fle", "f/le"]),
        ("[ab].bin", ["a.bin", "b.bin"], ["c.bin", "/.bin"]),
        ("[!ab].bin", ["c.bin"], ["a.bin", "b.bin"]),
        ("x[.bin", ["x[.bin"], ["x.bin"]),
        ("**", ["a", "a/b/c"], []),
        ("a+b(c).$", ["a+b(c).$"], ["aab(c).$"]),
    ],
)
def test_patterns_match_whole_relative_paths(pattern: str, matches: list[str], misses: list[str]) -> None:
    patterns = PathPatterns.parse([pattern])
    assert [p for p in matches if patterns.match(p) != pattern] == []
    assert [p for p in misses if patterns.match(p) is not None] == []


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "empty pattern"),
        ("/etc/passwd", "is absolute"),
        (".git/", "ends with '/'; name the files, e.g. .git/**"),
        ("a/../b", "'..' component"),
        ("a//b", "empty"),
        ("./a", "'.'"),
    ],
)
def test_unusable_patterns_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=re.escape(reason)):
        PathPatterns.parse([pattern])


def test_no_patterns_match_nothing() -> None:
    assert not PathPatterns() and PathPatterns().match("a") is None
    assert PathPatterns.parse(["a", "b"]).match("b") == "b"


@pytest.mark.parametrize("path", ["/abs", "a/../b", "./a", "a//b", "a/", ""])
def test_check_relative_path_refuses_what_leaves_the_root(path: str) -> None:
    with pytest.raises(ManifestError):
        check_relative_path(path)
    assert check_relative_path("a/b.bin") == "a/b.bin"


def test_progress_reports_every_byte(tree: Path) -> None:
    seen: list[int] = []
    totals: list[tuple[int, int]] = []
    manifest = hash_tree(tree, workers=3, progress=seen.append, on_total=lambda n, b: totals.append((n, b)))
    assert sum(seen) == manifest.total_bytes
    assert totals == [(manifest.file_count, manifest.total_bytes)]


# --------------------------------------------------------------------------------------------------
# refusals


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DigestError) as info:
        hash_tree(tmp_path / "nope")
    assert info.value.path == str(tmp_path / "nope")
    assert "no such file" in info.value.reason
    assert str(info.value) == f"{tmp_path / 'nope'}: {info.value.reason}"


def test_symlink_refused_by_default(tree: Path) -> None:
    (tree / "link").symlink_to("config.json")
    with pytest.raises(DigestError) as info:
        hash_tree(tree)
    assert info.value.path == str(tree / "link")
    assert "symlink" in info.value.reason


def test_symlink_recorded_not_followed(tree: Path) -> None:
    (tree / "link").symlink_to("config.json")
    (tree / "weights" / "latest").symlink_to("shard-2.bin")
    (tree / "dirlink").symlink_to("tokenizer")  # a directory link is not descended into
    manifest = hash_tree(tree, symlinks=SymlinkPolicy.RECORD)
    by_path = {f.path: f for f in manifest.files}
    link = by_path["link"]
    assert link.symlink
    assert (link.size, link.sha256) == (len(b"config.json"), hashlib.sha256(b"config.json").hexdigest())
    assert link.to_json() == {
        "path": "link",
        "size": 11,
        "sha256": hashlib.sha256(b"config.json").hexdigest(),
        "type": "symlink",
    }
    assert by_path["weights/latest"].sha256 == hashlib.sha256(b"shard-2.bin").hexdigest()
    assert by_path["dirlink"].symlink
    assert not any(p.startswith("dirlink/") for p in by_path)
    assert "type" not in by_path["config.json"].to_json()
    assert manifest.root == _independent_root([f.to_json() for f in manifest.files])
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize("target", ["../outside.txt", "../../etc/passwd", "weights/../../x"])
def test_symlink_escaping_root_refused(tree: Path, target: str) -> None:
    _write(tree.parent / "outside.txt", b"secret")
    (tree / "esc").symlink_to(target)
    with pytest.raises(DigestError) as info:
        hash_tree(tree, symlinks=SymlinkPolicy.RECORD)
    assert info.value.path == str(tree / "esc")
    assert "outside the root" in info.value.reason


def test_symlink_chain_escaping_root_refused(tree: Path) -> None:
    (tree / "hop").symlink_to("..")
    (tree / "esc").symlink_to("hop/outside")
    with pytest.raises(DigestError, match="outside the root"):
        hash_tree(tree, symlinks=SymlinkPolicy.RECORD)


def test_absolute_symlink_refused(tree: Path) -> None:
    (tree / "abs").symlink_to(tree / "config.json")
    with pytest.raises(DigestError) as info:
        hash_tree(tree, symlinks=SymlinkPolicy.RECORD)
    assert info.value.path == str(tree / "abs")
    assert "absolute" in info.value.reason


def test_symlink_root_refused(tree: Path) -> None:
    link = tree.parent / "current"
    link.symlink_to(tree)
    with pytest.raises(DigestError) as info:
        hash_tree(link, symlinks=SymlinkPolicy.RECORD)
    assert info.value.path == str(link)


def test_hash_file_refuses_symlink(tree: Path) -> None:
    (tree / "link").symlink_to("config.json")
    with pytest.raises(DigestError, match="symlink"):
        hash_file(tree / "link")


def test_fifo_refused(tree: Path) -> None:
    os.mkfifo(tree / "weights" / "pipe")
    with pytest.raises(DigestError) as info:
        hash_tree(tree, workers=2)
    assert info.value.path == str(tree / "weights" / "pipe")
    assert "FIFO" in info.value.reason
    with pytest.raises(DigestError, match="FIFO"):
        hash_tree(tree / "weights" / "pipe")  # as the root, too: never opened, so never blocks


def test_non_utf8_name_refused(tmp_path: Path) -> None:
    try:
        fd = os.open(os.path.join(os.fsencode(tmp_path), b"bad-\xff"), os.O_CREAT | os.O_WRONLY, 0o644)
    except OSError:
        pytest.skip("file system does not take non-UTF-8 names")
    os.close(fd)
    with pytest.raises(DigestError, match="not valid UTF-8"):
        hash_tree(tmp_path)


def _appender(path: Path) -> Callable[[int], None]:
    """A progress callback that appends to ``path`` the first time it is called.

    The callback runs after bytes were read and hashed but before the file's final fstat, so the
    change is always seen: the outcome does not depend on timing.
    """
    done = []

    def progress(_n: int) -> None:
        if not done:
            done.append(True)
            with open(path, "ab") as fh:
                fh.write(b"more")

    return progress


@pytest.mark.parametrize("size", [10_000, 3 * _CHUNK_MAX + 5], ids=["one-read", "pipelined"])
def test_file_growing_while_hashed_is_refused(tmp_path: Path, size: int) -> None:
    f = _write(tmp_path / "growing.bin", _rand(size))
    with pytest.raises(DigestError) as info:
        hash_tree(tmp_path, workers=1, progress=_appender(f))
    assert info.value.path == str(f)
    assert "changed while being hashed" in info.value.reason


def test_file_shrinking_while_hashed_is_refused(tmp_path: Path) -> None:
    f = _write(tmp_path / "shrinking.bin", _rand(3 * _CHUNK_MAX))
    calls: list[int] = []

    def progress(n: int) -> None:
        if not calls:
            os.truncate(f, 10)
        calls.append(n)

    with pytest.raises(DigestError, match="changed while being hashed"):
        hash_tree(tmp_path, workers=1, progress=progress)


@pytest.mark.parametrize("workers", [1, 4])
def test_failing_progress_callback_stops_the_pool(tmp_path: Path, workers: int) -> None:
    for i in range(20):
        _write(tmp_path / f"f{i:02d}", _rand(50_000, i))
    _write(tmp_path / "big.bin", _rand(4 * _CHUNK_MAX, 99))  # pipelined: the reader must be drained

    class Stop(Exception):
        pass

    def progress(_n: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        hash_tree(tmp_path, workers=workers, progress=progress)


# --------------------------------------------------------------------------------------------------
# manifest JSON


def _good() -> dict[str, Any]:
    files = [
        FileEntry("a.bin", 3, hashlib.sha256(b"abc").hexdigest()),
        FileEntry("dir/b.bin", 0, hashlib.sha256(b"").hexdigest()),
    ]
    return Manifest.from_files(files).to_json()


def test_from_json_roundtrip() -> None:
    obj = _good()
    m = Manifest.from_json(obj)
    assert m.to_json() == obj
    reordered = {"files": list(reversed(obj["files"])), "root": obj["root"]}
    assert Manifest.from_json(reordered) == m  # order of entries does not change the root


def _expect(obj: Any, field: str) -> None:
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(obj)
    assert str(info.value).startswith(field), str(info.value)


def test_from_json_rejects_wrong_root() -> None:
    obj = _good()
    obj["root"] = hashlib.sha256(b"other").hexdigest()
    _expect(obj, "root:")
    obj["files"][0]["size"] = 4  # a changed entry no longer matches the root
    obj["root"] = _good()["root"]
    _expect(obj, "root:")


@pytest.mark.parametrize("bad", ["../x", "/x", "a//b", "a/", "./a", "a/./b", "a/..", "", "a\x00b"])
def test_from_json_rejects_bad_paths(bad: str) -> None:
    obj = _good()
    obj["files"][1]["path"] = bad
    _expect(obj, "files[1].path:")
    with pytest.raises(ManifestError, match=r"^path:"):
        FileEntry.from_json({"path": bad, "size": 0, "sha256": "0" * 64})


@pytest.mark.parametrize("bad", ["A" * 64, "0" * 63, "0" * 65, "g" * 64, 5, None])
def test_from_json_rejects_bad_hex(bad: Any) -> None:
    obj = _good()
    obj["files"][0]["sha256"] = bad
    _expect(obj, "files[0].sha256:")
    obj = _good()
    obj["root"] = bad
    _expect(obj, "root:")


@pytest.mark.parametrize("bad", [-1, 1.0, True, "3", None, 2**53])
def test_from_json_rejects_bad_size(bad: Any) -> None:
    obj = _good()
    obj["files"][0]["size"] = bad
    _expect(obj, "files[0].size:")


def test_from_json_rejects_duplicates() -> None:
    obj = _good()
    obj["files"].append(dict(obj["files"][0]))
    _expect(obj, "files: duplicate path")
    with pytest.raises(ManifestError, match=r"duplicate path 'a\.bin'"):
        Manifest.from_files([FileEntry("a.bin", 0, "0" * 64), FileEntry("a.bin", 1, "1" * 64)])


def test_from_json_rejects_shape_errors() -> None:
    _expect([], "manifest:")
    _expect({"root": _good()["root"]}, "files: missing")
    _expect({"files": []}, "root: missing")
    _expect({**_good(), "extra": 1}, "extra: unknown field")
    _expect({**_good(), "files": {}}, "files: must be an array")
    obj = _good()
    obj["files"][0]["mode"] = 0o644
    _expect(obj, "files[0].mode: unknown field")
    obj = _good()
    obj["files"][0]["type"] = "dir"
    _expect(obj, "files[0].type:")
    obj = _good()
    del obj["files"][0]["sha256"]
    _expect(obj, "files[0].sha256: missing")
    obj = _good()
    obj["files"][0] = "a.bin"
    _expect(obj, "files[0].entry:")


def test_write_and_read(tmp_path: Path, tree: Path) -> None:
    manifest = hash_tree(tree)
    out = tmp_path / "out" / "manifest.json"
    out.parent.mkdir()
    manifest.write(out)
    manifest.write(out)  # replacing an existing file
    assert Manifest.read(out) == manifest
    assert json.loads(out.read_text()) == manifest.to_json()
    assert [p.name for p in out.parent.iterdir()] == ["manifest.json"]  # no temporary left behind


def test_read_rejects_bad_json(tmp_path: Path) -> None:
    f = tmp_path / "m.json"
    f.write_text("{not json")
    with pytest.raises(ManifestError, match="not JSON"):
        Manifest.read(f)
    root = _good()["root"]
    f.write_text(f'{{"root": "{root}", "root": "{root}", "files": []}}')
    with pytest.raises(ManifestError, match="root: duplicate key"):
        Manifest.read(f)
