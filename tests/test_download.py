"""galaxy_finetune.data.download against a local HTTP server: md5 checks, retries, safe extraction."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import struct
import tarfile
import time
import types
import urllib.error

import pytest

from galaxy_finetune.data import download as dl
from galaxy_finetune.data.download import ChecksumError, Unreachable, check_md5, download, extract_tar, gunzip, md5sum
from galaxy_finetune.core.errors import PipelineError

PAYLOAD = bytes(range(256)) * 400 + b"galaxy payload"  # ~100 kB, not a multiple of any chunk size


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def listing(folder) -> list[str]:
    """Everything in `folder`, hidden entries included."""
    return sorted(os.listdir(folder))


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """These tests talk to 127.0.0.1 only: ignore an offline switch set in the environment."""
    monkeypatch.delenv("GALAXY_FINETUNE_OFFLINE", raising=False)


@pytest.fixture
def no_sleep(monkeypatch):
    """Record download()'s backoff sleeps instead of sleeping."""
    sleeps: list[float] = []
    monkeypatch.setattr(dl, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


# --- md5 helpers -------------------------------------------------------------------------------------------

def test_md5sum_matches_hashlib_with_any_chunk_size(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert md5sum(path) == md5_of(PAYLOAD)
    assert md5sum(path, chunk=7) == md5_of(PAYLOAD)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert md5sum(empty) == "d41d8cd98f00b204e9800998ecf8427e"


def test_check_md5_names_file_both_md5s_and_hint(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    check_md5(path, md5_of(PAYLOAD))  # no error
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as info:
        check_md5(path, wrong, hint="fetch it again")
    msg = str(info.value)
    assert str(path) in msg and md5_of(PAYLOAD) in msg and wrong in msg and "fetch it again" in msg
    assert isinstance(info.value, PipelineError)
    with pytest.raises(ChecksumError, match="delete it and retry"):
        check_md5(path, wrong)


# --- download() --------------------------------------------------------------------------------------------

def test_download_fetches_and_checks_md5(http_server, tmp_path):
    base_url, folder = http_server
    (folder / "data.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "cache" / "sub" / "data.bin"  # parent folders are created
    got = download(f"{base_url}/data.bin?rlkey=abc&dl=0", dest, md5_of(PAYLOAD), timeout=5)
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert md5sum(dest) == md5_of(PAYLOAD)
    assert http_server.count("data.bin") == 1
    assert listing(dest.parent) == ["data.bin"]  # no temporary left behind


def test_download_accepts_str_dest(http_server, tmp_path):
    base_url, folder = http_server
    (folder / "a.txt").write_bytes(b"abc")
    got = download(f"{base_url}/a.txt", str(tmp_path / "a.txt"), md5_of(b"abc"), timeout=5)
    assert got == tmp_path / "a.txt" and got.read_bytes() == b"abc"


def test_wrong_md5_raises_names_file_and_md5s_and_leaves_nothing(http_server, tmp_path, no_sleep):
    base_url, folder = http_server
    served = PAYLOAD[: len(PAYLOAD) // 2]  # the server has a truncated copy
    (folder / "data.bin").write_bytes(served)
    dest_dir = tmp_path / "cache"
    dest_dir.mkdir()
    url = f"{base_url}/data.bin"
    with pytest.raises(ChecksumError) as info:
        download(url, dest_dir / "data.bin", md5_of(PAYLOAD), timeout=5, backoff_s=0.001)
    msg = str(info.value)
    assert "data.bin" in msg
    assert md5_of(PAYLOAD) in msg  # expected
    assert md5_of(served) in msg  # actual
    assert url in msg
    assert listing(dest_dir) == []  # no partial file, no temporary folder
    assert http_server.count("data.bin") == 1  # a bad checksum is not retried
    assert no_sleep == []


def test_connection_cut_mid_transfer_is_a_checksum_error(http_server, tmp_path):
    base_url, folder = http_server
    (folder / "data.bin").write_bytes(PAYLOAD)
    http_server.truncate("data.bin", 1000)  # Content-Length says full size, body stops after 1000 bytes
    dest_dir = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        download(f"{base_url}/data.bin", dest_dir / "data.bin", md5_of(PAYLOAD), timeout=5, retries=1)
    assert md5_of(PAYLOAD[:1000]) in str(info.value)
    assert listing(dest_dir) == []


def test_existing_correct_file_is_not_downloaded_again(http_server, tmp_path):
    base_url, folder = http_server
    (folder / "data.bin").write_bytes(b"something else entirely")
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    before = dest.stat().st_mtime_ns
    assert download(f"{base_url}/data.bin", dest, md5_of(PAYLOAD), timeout=5) == dest
    assert http_server.hits == []
    assert dest.read_bytes() == PAYLOAD and dest.stat().st_mtime_ns == before


def test_existing_stale_file_is_replaced(http_server, tmp_path):
    base_url, folder = http_server
    (folder / "data.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale, half-written")
    download(f"{base_url}/data.bin", dest, md5_of(PAYLOAD), timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert http_server.count("data.bin") == 1
    assert listing(tmp_path) == ["data.bin"]


@pytest.mark.parametrize("code", [500, 503, 429])
def test_transient_errors_are_retried_then_succeed(http_server, tmp_path, code):
    base_url, folder = http_server
    (folder / "data.bin").write_bytes(PAYLOAD)
    http_server.fail("data.bin", times=2, code=code)
    dest = tmp_path / "data.bin"
    start = time.monotonic()
    download(f"{base_url}/data.bin", dest, md5_of(PAYLOAD), timeout=5, retries=3, backoff_s=0.001)
    assert time.monotonic() - start < 5
    assert dest.read_bytes() == PAYLOAD
    assert http_server.count("data.bin") == 3
    assert listing(tmp_path) == ["data.bin"]


def test_retries_back_off_exponentially(http_server, tmp_path, no_sleep):
    base_url, folder = http_server
    (folder / "data.bin").write_bytes(PAYLOAD)
    http_server.fail("data.bin", times=3)
    download(f"{base_url}/data.bin", tmp_path / "data.bin", md5_of(PAYLOAD), timeout=5, retries=4, backoff_s=0.5)
    assert no_sleep == [0.5, 1.0, 2.0]
    assert http_server.count("data.bin") == 4


def test_persistent_500_gives_up_after_retries(http_server, tmp_path, no_sleep):
    base_url, folder = http_server
    (folder / "data.bin").write_bytes(PAYLOAD)
    http_server.fail("data.bin", times=100)
    url = f"{base_url}/data.bin?dl=0"
    with pytest.raises(Unreachable) as info:
        download(url, tmp_path / "out" / "data.bin", md5_of(PAYLOAD), timeout=5, retries=3, backoff_s=0.01)
    msg = str(info.value)
    assert msg.startswith("data.bin: could not download") and url in msg
    assert http_server.count("data.bin") == 3
    assert no_sleep == [0.01, 0.02]
    assert listing(tmp_path / "out") == []
    assert isinstance(info.value, PipelineError)


@pytest.mark.parametrize("code", [404, 403])
def test_client_errors_are_not_retried(http_server, tmp_path, no_sleep, code):
    base_url, folder = http_server
    if code == 403:
        (folder / "data.bin").write_bytes(PAYLOAD)
        http_server.fail("data.bin", times=100, code=403)
    url = f"{base_url}/data.bin"
    with pytest.raises(Unreachable) as info:
        download(url, tmp_path / "data.bin", md5_of(PAYLOAD), timeout=5, retries=5, backoff_s=10)
    assert "data.bin" in str(info.value) and url in str(info.value)
    assert http_server.count("data.bin") == 1
    assert no_sleep == []
    assert listing(tmp_path) == []


def test_unresolvable_host_is_unreachable_at_once(monkeypatch, tmp_path, no_sleep):
    # Simulate the resolver's answer for a name that cannot exist (.invalid, RFC 2606) so that no DNS
    # query leaves this machine.
    real_getaddrinfo = socket.getaddrinfo
    lookups = []

    def fake_getaddrinfo(host, *args, **kwargs):
        if host == "galaxy.invalid":
            lookups.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    start = time.monotonic()
    with pytest.raises(Unreachable) as info:
        download("http://galaxy.invalid/x", tmp_path / "x", "0" * 32, timeout=5, retries=3, backoff_s=10)
    assert time.monotonic() - start < 5
    assert lookups == ["galaxy.invalid"]  # no network at all: not retried
    assert no_sleep == []
    assert "x: could not download http://galaxy.invalid/x" in str(info.value)
    assert "Name or service not known" in str(info.value)
    assert listing(tmp_path) == []


def test_connection_refused_is_retried_then_unreachable(dead_url_base, tmp_path, no_sleep):
    start = time.monotonic()
    with pytest.raises(Unreachable, match="data.bin: could not download"):
        download(f"{dead_url_base}/data.bin", tmp_path / "data.bin", "0" * 32, timeout=5, retries=2, backoff_s=0.001)
    assert time.monotonic() - start < 5
    assert no_sleep == [0.001]  # refused is transient (server may be restarting): one retry
    assert listing(tmp_path) == []


def test_a_server_that_never_answers_times_out(tmp_path, no_sleep):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # connections queue up but nobody ever answers
        port = sock.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(Unreachable, match="data.bin: could not download"):
            download(f"http://127.0.0.1:{port}/data.bin", tmp_path / "data.bin", "0" * 32, timeout=0.2, retries=2)
        assert time.monotonic() - start < 3
    assert no_sleep == [1.0]
    assert listing(tmp_path) == []


@pytest.mark.skipif(not hasattr(dl, "OFFLINE_ENV"), reason="no offline switch in this version")
def test_offline_switch_blocks_downloads_but_not_the_cache(http_server, tmp_path, monkeypatch):
    base_url, folder = http_server
    (folder / "data.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    with pytest.raises(Unreachable, match=dl.OFFLINE_ENV):
        download(f"{base_url}/data.bin", tmp_path / "data.bin", md5_of(PAYLOAD), timeout=5)
    assert http_server.hits == [] and listing(tmp_path) == []
    (tmp_path / "data.bin").write_bytes(PAYLOAD)  # a verified copy is still used
    assert download(f"{base_url}/data.bin", tmp_path / "data.bin", md5_of(PAYLOAD), timeout=5).is_file()
    monkeypatch.setenv(dl.OFFLINE_ENV, "0")  # "0" means online
    download(f"{base_url}/data.bin", tmp_path / "other.bin", md5_of(PAYLOAD), timeout=5)
    assert http_server.count("data.bin") == 1


def test_transient_rule():
    assert dl._transient(urllib.error.HTTPError("u", 500, "x", {}, None))
    assert dl._transient(urllib.error.HTTPError("u", 429, "x", {}, None))
    assert not dl._transient(urllib.error.HTTPError("u", 404, "x", {}, None))
    assert not dl._transient(urllib.error.URLError(socket.gaierror(-2, "Name or service not known")))
    assert dl._transient(urllib.error.URLError(ConnectionRefusedError()))
    assert dl._transient(TimeoutError())


# --- extract_tar() -----------------------------------------------------------------------------------------

def _without_filters(monkeypatch) -> None:
    """tarfile as Debian 12's Python 3.11.2 has it: no extraction filters, and extractall() refuses `filter`."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    real = tarfile.TarFile.extractall

    def extractall(self, path=".", members=None, *, numeric_owner=False, **kwargs):
        if kwargs:
            raise TypeError(f"TarFile.extractall() got an unexpected keyword argument {next(iter(kwargs))!r}")
        extra = {"filter": "fully_trusted"} if "filter" in real.__code__.co_varnames else {}  # the old behaviour
        return real(self, path, members, numeric_owner=numeric_owner, **extra)

    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)


@pytest.fixture(params=["this-python", "no-tar-filters"])
def tar_python(request, monkeypatch):
    """Each extraction test on this interpreter's tarfile, and on one without filters (Python < 3.11.4)."""
    if request.param == "no-tar-filters":
        _without_filters(monkeypatch)
    return request.param


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def make_tar(path, entries, mode="w:gz"):
    """Write a tar with the given (TarInfo, data-or-None) entries."""
    with tarfile.open(path, mode) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _link(name: str, target: str, kind) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


GOOD_ENTRIES = [_dir("images"), _file("images/a.jpg", b"A" * 3000), _file("images/b.jpg", b"B" * 10),
                _dir("images/nested"), _file("images/nested/c.txt", b"c")]


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_extract_tar_unpacks(tmp_path, mode, tar_python):
    archive = make_tar(tmp_path / ("good.tar.gz" if mode == "w:gz" else "good.tar"), GOOD_ENTRIES, mode)
    dest = tmp_path / "out"
    assert extract_tar(archive, dest) == dest
    assert (dest / "images" / "a.jpg").read_bytes() == b"A" * 3000
    assert (dest / "images" / "b.jpg").read_bytes() == b"B" * 10
    assert (dest / "images" / "nested" / "c.txt").read_bytes() == b"c"
    assert listing(tmp_path) == sorted([archive.name, "out"])  # no temporary left behind


def test_the_no_filter_stand_in_fails_as_python_3_11_2_did(tmp_path, monkeypatch):
    """The stand-in above is faithful: the call this project made before its fallback raises its TypeError."""
    _without_filters(monkeypatch)
    archive = make_tar(tmp_path / "good.tar.gz", GOOD_ENTRIES)
    with tarfile.open(archive) as tar, pytest.raises(TypeError, match="unexpected keyword argument 'filter'"):
        tar.extractall(tmp_path / "out", filter="data")
    assert not hasattr(tarfile, "data_filter")


def test_extract_tar_drops_special_mode_bits_with_or_without_filters(tmp_path, tar_python):
    """setuid and group/other-write bits never reach the disk, whichever way the archive was unpacked."""
    setuid, shared = _file("images/setuid.sh", b"#!/bin/sh\n"), _file("images/shared.txt", b"x")
    setuid[0].mode, shared[0].mode = 0o4777, 0o666
    archive = make_tar(tmp_path / "modes.tar.gz", [_dir("images"), setuid, shared])
    dest = extract_tar(archive, tmp_path / "out")
    assert oct((dest / "images" / "setuid.sh").stat().st_mode & 0o7777) == oct(0o755)
    assert oct((dest / "images" / "shared.txt").stat().st_mode & 0o7777) == oct(0o644)
    assert (dest / "images" / "shared.txt").stat().st_uid == os.getuid()


def test_extract_tar_replaces_an_existing_destination(tmp_path):
    archive = make_tar(tmp_path / "good.tar.gz", GOOD_ENTRIES)
    dest = tmp_path / "out"
    (dest / "images").mkdir(parents=True)
    (dest / "stale.txt").write_text("old")
    extract_tar(str(archive), str(dest))
    assert not (dest / "stale.txt").exists()
    assert (dest / "images" / "b.jpg").read_bytes() == b"B" * 10


@pytest.mark.parametrize("bad, why", [
    (_file("../evil.txt", b"x"), "escape"),
    (_file("images/../../evil.txt", b"x"), "escape"),
    (_file("/tmp/evil_abs_galaxy.txt", b"x"), "escape"),
    (_link("images/link.jpg", "/etc/passwd", tarfile.SYMTYPE), "links"),
    (_link("images/rel_link.jpg", "a.jpg", tarfile.SYMTYPE), "links"),
    (_link("images/hard.jpg", "images/a.jpg", tarfile.LNKTYPE), "links"),
    (_link("images/fifo", "", tarfile.FIFOTYPE), "devices"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-abs", "symlink-rel", "hardlink", "fifo"])
def test_extract_tar_refuses_unsafe_entries(tmp_path, bad, why, tar_python):
    work = tmp_path / "work"
    work.mkdir()
    archive = make_tar(work / "evil.tar.gz", GOOD_ENTRIES + [bad])
    dest = work / "out"
    with pytest.raises(PipelineError) as info:
        extract_tar(archive, dest)
    msg = str(info.value)
    assert str(archive) in msg
    assert repr(bad[0].name) in msg  # the entry is named
    assert why in msg
    assert not dest.exists()
    assert listing(work) == ["evil.tar.gz"]  # nothing unpacked anywhere, no temporary
    assert not (tmp_path / "evil.txt").exists()


def test_refused_archive_keeps_an_existing_destination(tmp_path):
    archive = make_tar(tmp_path / "evil.tar.gz", GOOD_ENTRIES + [_file("../evil.txt", b"x")])
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep")
    with pytest.raises(PipelineError, match="refusing entry '../evil.txt'"):
        extract_tar(archive, dest)
    assert (dest / "keep.txt").read_text() == "keep"


def _deflate_then_invalid_block(payload: bytes) -> bytes:
    """A gzip stream: `payload` as a stored (non-final) block, then a block of the reserved type 3.

    Readers get `payload` intact and then zlib fails with "invalid block type".
    """
    assert len(payload) < 65536
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    stored = b"\x00" + struct.pack("<HH", len(payload), len(payload) ^ 0xFFFF) + payload
    return header + stored + b"\x07" + b"\x00" * 32


def _plain_tar_bytes(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "bad-deflate-midway"])
def test_extract_tar_corrupt_archive_is_a_pipeline_error(tmp_path, kind):
    archive = tmp_path / "broken.tar.gz"
    good = make_tar(tmp_path / "good.tar.gz", [_file(f"images/{i}.bin", os.urandom(20000)) for i in range(5)])
    if kind == "truncated":
        archive.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "garbage":
        archive.write_bytes(b"this is not an archive at all\n" * 100)
    elif kind == "empty":
        archive.write_bytes(b"")
    else:  # opening reads the first header fine; skipping to the second member hits broken data
        tar_bytes = _plain_tar_bytes([_file("images/big.bin", b"x" * 60000), _file("images/more.bin", b"y")])
        archive.write_bytes(_deflate_then_invalid_block(tar_bytes[:30000]))
    good.unlink()
    dest = tmp_path / "out"
    with pytest.raises(PipelineError) as info:
        extract_tar(archive, dest)
    assert str(info.value).startswith(f"{archive}: cannot unpack")
    assert "delete it and retry" in str(info.value)
    assert not dest.exists()
    assert listing(tmp_path) == ["broken.tar.gz"]


def test_extract_tar_missing_archive_is_a_pipeline_error(tmp_path):
    with pytest.raises(PipelineError, match="cannot unpack"):
        extract_tar(tmp_path / "nope.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- gunzip() ----------------------------------------------------------------------------------------------

def test_gunzip_decompresses(tmp_path):
    src = tmp_path / "data.bin.gz"
    src.write_bytes(gzip.compress(PAYLOAD))
    dest = tmp_path / "sub" / "data.bin"
    assert gunzip(src, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert listing(tmp_path / "sub") == ["data.bin"]
    dest.write_bytes(b"old")  # decompressing again replaces the file
    gunzip(str(src), str(dest))
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("kind", ["garbage", "truncated", "bad-crc", "bad-deflate"])
def test_gunzip_corrupt_is_a_pipeline_error(tmp_path, kind):
    src = tmp_path / "data.bin.gz"
    good = gzip.compress(PAYLOAD)
    if kind == "garbage":
        src.write_bytes(b"not gzip at all" * 10)
    elif kind == "truncated":
        src.write_bytes(good[: len(good) // 2])
    elif kind == "bad-crc":
        src.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:])
    else:
        src.write_bytes(_deflate_then_invalid_block(b"some data before the damage"))
    dest = tmp_path / "data.bin"
    with pytest.raises(PipelineError) as info:
        gunzip(src, dest)
    assert str(info.value).startswith(f"{src}: cannot decompress")
    assert not dest.exists()
    assert listing(tmp_path) == ["data.bin.gz"]


def test_gunzip_missing_source_is_a_pipeline_error(tmp_path):
    with pytest.raises(PipelineError, match="cannot decompress"):
        gunzip(tmp_path / "nope.gz", tmp_path / "out")
    assert listing(tmp_path) == []
