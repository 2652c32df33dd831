"""HTTP downloads with md5 checks, retries with backoff, and archive extraction that cannot escape."""
from __future__ import annotations

import copy
import gzip
import os
import hashlib
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, write_text


OFFLINE_ENV = "GALAXY_FINETUNE_OFFLINE"  # set to 1 on machines without network: no download is attempted


class Unreachable(PipelineError):
    """The file could not be fetched (no network, server down): the offline fallback may apply. `host`: the server
    that could not be reached (None when no attempt was made: an offline switch is set)."""

    def __init__(self, message: str, host: str | None = None):
        super().__init__(message)
        self.host = host


class ChecksumError(PipelineError):
    """A file arrived or was found with the wrong md5: never used, never silently replaced."""


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _memo(path: Path, memo_dir: Path | None) -> tuple[Path | None, str]:
    """Where a file's verified md5 is remembered, and the stamp (path, size, mtime) it is remembered for."""
    if memo_dir is None:
        return None, ""
    resolved, stat = Path(path).resolve(), Path(path).stat()
    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:20]
    return Path(memo_dir) / f"{key}.md5", f"{resolved} {stat.st_size} {stat.st_mtime_ns}"


def known_md5(path: Path, memo_dir: Path | None = None) -> str:
    """`path`'s md5, remembered in `memo_dir` for its (path, size, mtime): a file nobody published an md5 for
    (gz_hubble's images) is hashed once, not on every fetch."""
    memo, stamp = _memo(path, memo_dir)
    if memo is not None and memo.is_file():
        md5, _, seen = memo.read_text().partition(" ")
        if seen == stamp:
            return md5
    actual = md5sum(path)
    if memo is not None:
        write_text(memo, f"{actual} {stamp}")
    return actual


def check_md5(path: Path, expected: str, hint: str = "", memo_dir: Path | None = None) -> None:
    """Raise ChecksumError unless `path` has md5 `expected`. With `memo_dir`, a file already verified with
    the same size and mtime is not hashed again (the always-rerun fetch stays cheap); the memo lives
    there, never beside the user's file."""
    memo, stamp = _memo(path, memo_dir)
    if memo is not None and memo.is_file() and memo.read_text() == f"{expected} {stamp}":
        return
    actual = md5sum(path)
    if actual == expected and memo is not None:
        write_text(memo, f"{expected} {stamp}")
    if actual != expected:
        raise ChecksumError(f"{path}: md5 {actual} but expected {expected}; {hint or 'delete it and retry'}")


def _transient(exc: Exception) -> bool:
    """Worth another try? Not when there is no network at all (DNS fails) or the server said 4xx."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, socket.gaierror):
        return False
    return True


def download(url: str, dest: str | Path, md5: str | None, timeout: float = 60, retries: int = 3,
             backoff_s: float = 1.0) -> Path:
    """Fetch `url` to `dest` unless a file with the right md5 is already there.

    Streams to a temporary file that only becomes `dest` once its md5 matches; a truncated or corrupt
    download is deleted and reported. Transient network errors are retried with exponential backoff.
    md5 None (nothing published to check against): any complete download is kept, unverified.
    """
    dest = Path(dest)
    if dest.is_file() and md5 is None:
        return dest  # only ever written whole (atomic_path), but unverifiable
    if dest.is_file():
        try:
            check_md5(dest, md5, memo_dir=dest.parent / ".verified")
            return dest
        except ChecksumError:
            pass  # a stale or partial file: download again
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise Unreachable(f"{dest.name}: not downloaded from {url} because {OFFLINE_ENV} is set")
    last = None
    for attempt in range(retries):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            with atomic_path(dest) as tmp:
                with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
                actual = md5sum(tmp) if md5 is not None else None
                if actual != md5:
                    raise ChecksumError(f"{dest.name}: downloaded from {url} with md5 {actual} but expected "
                                        f"{md5} (truncated or corrupted; the partial file was removed); retry")
            return dest
        except ChecksumError:
            raise
        except (urllib.error.URLError, TimeoutError, ConnectionError, socket.timeout) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # an HTTPError holds the response's socket open
            last = exc
            if not _transient(exc):
                break
    reason = getattr(last, "reason", last)
    raise Unreachable(f"{dest.name}: could not download {url} ({reason})", urllib.parse.urlsplit(url).hostname)


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    if not (member.isfile() or member.isdir()):
        raise PipelineError(f"{archive}: refusing entry {name!r} (links and devices are not allowed)")
    if name.startswith(("/", "\\")) or ".." in Path(name).parts:
        raise PipelineError(f"{archive}: refusing entry {name!r} (it would escape the target folder)")


def _plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """A checked member (a file or folder) as tarfile's `data` filter would extract it, for Pythons without the
    filters: the mode without setuid/setgid/sticky and group/other write bits (the owner may read and write),
    and no owner taken from the archive (a root user's extraction would otherwise chown to it)."""
    plain = copy.copy(member)
    plain.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
    plain.uid, plain.gid, plain.uname, plain.gname = os.getuid(), os.getgid(), "", ""
    return plain


def extract_tar(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a tar(.gz) archive into `dest` atomically; links, devices and escaping paths are refused.

    Where tarfile has extraction filters (Python 3.11.4+, 3.10.12+; `tarfile.data_filter`), the `data` filter
    applies too; on an older Python (Debian 12's 3.11.2) the member checks above are the guard, and each member
    is extracted as the filter would leave it (no special mode bits, no owner from the archive)."""
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            with atomic_path(dest) as tmp:
                tmp.mkdir()
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:
                    tar.extractall(tmp, members=[_plain(m) for m in members])
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, zlib.error) as exc:
        raise PipelineError(f"{archive}: cannot unpack ({exc}); delete it and retry") from None
    return dest


def gunzip(src: str | Path, dest: str | Path) -> Path:
    """Decompress a .gz file atomically."""
    src, dest = Path(src), Path(dest)
    try:
        with atomic_path(dest) as tmp, gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        raise PipelineError(f"{src}: cannot decompress ({exc}); delete it and retry") from None
    return dest
