"""Small pictures of an item, before and after, made on demand by one worker process and cached under state/.

The page never decodes an image itself: a photo of 40 megapixels would hold
up every other request for a second. One worker, at a CPU priority below the
daemon's jobs and with a cap on its memory, makes each picture once; the cache is keyed by what the picture was made
from (its path, size and modification time, or the ZIP and its member), so a
retried item's new cutout gets a new picture, and a file that is gone
(swept, removed) simply has none.

A decoder can crash the worker (a segfault in a codec, the kernel's OOM
killer): the pool then breaks, and is replaced by a fresh one; a picture that
breaks the fresh one as well is not asked for again.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import multiprocessing
import os
import resource
import stat
import zipfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import NamedTuple

SIDE = 256  # pixels on the longer side: the page's small pictures
LARGE_SIDE = 1600  # the review's before and after, zoomable: a judge of edges needs at least 1024
CACHE_LIMIT = 5000  # pictures kept; the oldest go first
MEDIA_TYPE = "image/webp"
# Address space, not resident memory: a codec's thread stacks and arenas count, so this is well above what a
# 100-megapixel picture needs, and a bomb that slips past Pillow's pixel limit fails with MemoryError.
WORKER_MEMORY_BYTES = 1536 * 1024 * 1024
CRASHED_LIMIT = 1000  # sources remembered as killing the worker; past it the oldest are tried again
# The worker's niceness: below the page (5) and the daemon's jobs (0), so they come first, but not the lowest.
# At 19, two busy jobs left it about 1.5 % of a core and a large picture took half a minute, long enough
# for the browser's six connections to fill with pictures and hold back a reviewer's button; at 10, some 10 %.
WORKER_NICE = 10


class Source(NamedTuple):
    """What a picture is made from: a file, or a member of a ZIP (the cutout once its session is complete)."""

    path: Path
    member: str | None = None


def key(source: Source, side: int = SIDE) -> str | None:
    """The cache's name for this source's picture; None if the source is not a regular file (gone, or a link)."""
    try:
        info = os.lstat(source.path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None  # never a link: it could point anywhere on the machine
    text = f"{source.path}\0{source.member}\0{info.st_size}\0{info.st_mtime_ns}"
    if side != SIDE:  # the small pictures keep the names they were cached under
        text += f"\0{side}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def read_source(source: Source) -> bytes:
    fd = os.open(source.path, os.O_RDONLY | os.O_NOFOLLOW)
    with open(fd, "rb") as file:
        if source.member is None:
            return file.read()
        with zipfile.ZipFile(file) as archive:
            return archive.read(source.member)


def make(source: Source, target: Path, side: int = SIDE) -> bool:
    """Write the picture of `source` to `target` (in the worker process); False if it cannot be read as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = read_source(source)
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (side * 2, side * 2))  # a JPEG decodes at a fraction of its size: much faster
            image.thumbnail((side, side))
            image = image.convert("RGBA" if has_alpha(image) else "RGB")
            temp = target.with_name(f".{target.name}.{os.getpid()}")
            image.save(temp, "WEBP", quality=80, method=4)
            os.replace(temp, target)
        return True
    except (
        OSError,
        KeyError,
        ValueError,
        MemoryError,
        UnidentifiedImageError,
        zipfile.BadZipFile,
        Image.DecompressionBombError,
    ):
        return False


def has_alpha(image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def prepare_worker() -> None:
    """Run in the worker before its first picture."""
    os.nice(max(0, WORKER_NICE - os.nice(0)))  # os.nice adds to what the page's own process has
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    import pillow_heif

    pillow_heif.register_heif_opener()  # phones' HEIC photos, as the job reads them


def new_pool() -> ProcessPoolExecutor:
    # spawn, not fork: the server's threads and event loop must not be copied into the worker.
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=prepare_worker)


class Thumbnails:
    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.pool: ProcessPoolExecutor | None = None
        self.made = 0
        self.crashed: dict[str, None] = {}  # keys whose source killed a fresh worker, oldest first

    def start(self) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        for temp in self.cache.glob(".*.webp.*"):
            temp.unlink(missing_ok=True)  # a picture the worker was making when it was stopped
        self.pool = new_pool()

    def close(self) -> None:
        """Stop the worker now: a picture half made is not worth waiting for (under load it may take a minute)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            # The executor has no public way to stop its workers before Python 3.14's terminate_workers.
            workers = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in workers:
                worker.kill()
                worker.join()

    def replace(self, broken: ProcessPoolExecutor) -> None:
        """A fresh pool for a broken one; requests that saw the same break replace it only once."""
        if self.pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = new_pool()

    async def made_in_worker(self, name: str, source: Source, target: Path, side: int = SIDE) -> bool:
        """`make` in the worker; a worker that died on the way is replaced and the picture asked of the next."""
        loop = asyncio.get_running_loop()
        for _ in range(2):
            pool = self.pool
            if pool is None:
                return False  # the page is stopping
            try:
                return await loop.run_in_executor(pool, make, source, target, side)
            except BrokenProcessPool:
                self.replace(pool)
        # Twice a dead worker: this picture is what kills it, so it is not asked for again.
        self.crashed[name] = None
        if len(self.crashed) > CRASHED_LIMIT:
            del self.crashed[next(iter(self.crashed))]
        return False

    async def picture(self, source: Source, side: int = SIDE) -> Path | None:
        """The cached picture of `source` (`side` pixels on its longer side at most), made now if need be;
        None when there is none to show."""
        name = key(source, side)
        if name is None:
            return None
        target = self.cache / f"{name}.webp"
        if target.is_file():
            return target
        if name in self.crashed or not await self.made_in_worker(name, source, target, side):
            return None
        self.made += 1
        if self.made % 100 == 0:
            await asyncio.get_running_loop().run_in_executor(None, prune, self.cache, CACHE_LIMIT)
        return target


def prune(cache: Path, limit: int) -> None:
    """Keep the `limit` most recently made pictures."""

    def made_at(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    for old in sorted(cache.glob("*.webp"), key=made_at, reverse=True)[limit:]:
        old.unlink(missing_ok=True)
