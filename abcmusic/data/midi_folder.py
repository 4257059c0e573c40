"""The folder of MIDI files prepare converts: a local path, or an object-storage URI (s3://, gs://, file://, ...)
that pyarrow opens. The driver lists it; every conversion task opens it again, so with a URI a task on any node
reads its files straight from the bucket."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from abcmusic.data.discover import find_midi_files, select_midi_paths
from abcmusic.errors import UserError, first_line
from abcmusic.storage import is_uri, open_filesystem


@dataclass(frozen=True)
class MidiFile:
    path: str  # relative to the folder, "/"-separated
    size: int
    mtime_ns: int


class MidiTooLarge(Exception):
    def __init__(self, size: int):
        super().__init__(f"{size} bytes")
        self.size = size


class LocalMidiFolder:
    is_uri = False

    def __init__(self, location: str):
        self.root = Path(location).resolve()
        self.location = str(self.root)

    def list_midi_files(self) -> list[MidiFile]:
        if not self.root.is_dir():
            raise UserError(f"--midi-dir {self.location} does not exist or is not a folder")
        files = []
        for path in find_midi_files(self.root):
            stat = os.stat(self.root / path)
            files.append(MidiFile(path, stat.st_size, stat.st_mtime_ns))
        return files

    def read(self, source_path: str, max_bytes: int) -> bytes:
        """The file's bytes; MidiTooLarge (before reading) over `max_bytes`, OSError when it cannot be read."""
        size = os.path.getsize(self.root / source_path)
        if size > max_bytes:
            raise MidiTooLarge(size)
        return (self.root / source_path).read_bytes()


class UriMidiFolder:
    is_uri = True

    def __init__(self, location: str):
        self.location = location
        self._filesystem, root = open_filesystem(location, f"--midi-dir {location}: cannot open it")
        self._prefix = root.rstrip("/") + "/"

    def list_midi_files(self) -> list[MidiFile]:
        """The same files, in the same order, as a local folder with this content would give."""
        import pyarrow.fs

        root = self._prefix.rstrip("/") or "/"
        try:
            kind = self._filesystem.get_file_info(root).type
            if kind == pyarrow.fs.FileType.File:
                raise UserError(f"--midi-dir {self.location} is a file, not a folder")
            if kind != pyarrow.fs.FileType.Directory:
                raise UserError(f"--midi-dir {self.location} does not exist")
            listing = self._filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
        except OSError as error:
            raise UserError(f"--midi-dir {self.location}: cannot reach it: {first_line(error)}") from None
        files = {info.path[len(self._prefix):]: info for info in listing
                 if info.type == pyarrow.fs.FileType.File and info.path.startswith(self._prefix)}
        return [MidiFile(path, files[path].size, files[path].mtime_ns or 0) for path in select_midi_paths(files)]

    def read(self, source_path: str, max_bytes: int) -> bytes:
        """The file's bytes; MidiTooLarge (before reading) over `max_bytes`, OSError when it cannot be read."""
        with self._filesystem.open_input_file(self._prefix + source_path) as stream:
            size = stream.size()
            if size > max_bytes:
                raise MidiTooLarge(size)
            return stream.read()


def open_midi_folder(location: str | Path) -> LocalMidiFolder | UriMidiFolder:
    location = str(location)
    return UriMidiFolder(location) if is_uri(location) else LocalMidiFolder(location)
