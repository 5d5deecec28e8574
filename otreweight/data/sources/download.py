"""Downloads, checksums, safe extraction of tar archives, and reading a file that may be gzipped."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

from ...utils import file_digest
from .arrays import DataError


def read_maybe_gzip(path: Path) -> bytes:
    """The bytes of ``path``, decompressed when its name ends in ``.gz`` (a damaged one: one line)."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path} is not a readable gzip file ({e}); fetch it again") from None
    return raw


def _md5(path: Path) -> str:
    return file_digest(path, "md5")


def _urlretrieve(url: str, dest: str) -> None:
    """Download ``url`` to the file ``dest`` (raises OSError when offline)."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
        total = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {url.rsplit('/', 1)[-1]}",
                  disable=None) as bar:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` without leaving ``dest`` or following links.

    Members land in a temporary folder first; each top-level entry is then
    renamed into ``dest`` (existing entries are kept).
    """
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python without extraction filters: check members by hand
                base = os.path.realpath(tmp)
                for m in tar.getmembers():
                    target = os.path.realpath(os.path.join(base, m.name))
                    if not (m.isfile() or m.isdir()) or os.path.commonpath([base, target]) != base:
                        raise DataError(f"{archive} has an unsafe member {m.name!r}: refusing to extract it")
                tar.extractall(tmp)
        for entry in tmp.iterdir():
            if not (dest / entry.name).exists():
                os.replace(entry, dest / entry.name)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"cannot extract {archive} ({e}): the archive is damaged; delete it and fetch it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
