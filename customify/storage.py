"""Where renders and uploads live: the data dir (a shared volume when scaled out).

One class, one configuration key (`data_dir`); an object store can replace it
later without touching tasks or handlers. Every write goes to a temp name in
the same directory and is renamed into place, so readers never see half a file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> Path:
    """Write to a temp name in the same directory, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.renders = root / "renders"
        self.assets = root / "assets"
        self.outbox = root / "outbox"

    def write(self, path: Path, data: bytes) -> Path:
        return write_atomic(path, data)

    # Renders: renders/<design id>/v<version>-<claim tag>.png and .thumb.webp|.jpg.
    # The claim tag keeps two workers that rendered the same version (one lost
    # its lease) from ever touching each other's files.

    def render_paths(self, design_id: str, version: int, thumb_ext: str, tag: str) -> tuple[Path, Path]:
        folder = self.renders / design_id
        return folder / f"v{version}-{tag}.png", folder / f"v{version}-{tag}.thumb.{thumb_ext}"

    def remove_renders(self, design_id: str, keep: set[str] | None = None) -> None:
        """Remove a design's render files, except the file names in `keep`."""
        folder = self.renders / design_id
        if not folder.is_dir():
            return
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
            return
        for file in folder.iterdir():
            if file.name not in keep and not file.name.startswith("."):
                file.unlink(missing_ok=True)

    # Assets: content-addressed, assets/<sha256[:2]>/<sha256>.<ext>

    def asset_path(self, sha256: str, fmt: str) -> Path:
        return self.assets / sha256[:2] / f"{sha256}.{fmt.lower()}"
