"""Where results that must outlive a node go: a local folder, or an object-storage URI that pyarrow understands."""

from __future__ import annotations

from pathlib import Path

from abcmusic.errors import UserError, first_line

STORAGE_ENV = "ABCMUSIC_STORAGE"  # cluster.yaml sets it once, e.g. s3://bucket/abcmusic


def is_uri(location: str) -> bool:
    return "://" in location


def join(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *names]) if is_uri(base) else str(Path(base).joinpath(*names))


def open_filesystem(uri: str, failure: str):
    """pyarrow's (filesystem, path) for a URI; a UserError "<failure>: <why>" when pyarrow cannot open it."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as error:
        raise UserError(f"{failure}: {first_line(error)}") from None


def exists(location: str) -> bool:
    """Whether a file or folder is at a local path or a URI (s3://, gs://, file://, ...)."""
    if not is_uri(location):
        return Path(location).exists()
    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
        return filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound
    except (OSError, ValueError) as error:
        raise UserError(f"cannot reach storage {location}: {first_line(error)}") from None
