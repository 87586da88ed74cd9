"""Atomic outputs and the one output policy every command follows.

- Every file rsgeo writes goes through :func:`atomic_path`: the writer gets a temporary
  name in the target folder, published onto the requested name only when the block
  finishes without an exception. On failure or Ctrl-C the temporary file is removed, so
  nothing half-written ever stands under the requested name.
- Publishing is exclusive: without ``overwrite`` the temporary file is hard-linked onto the
  final name, which fails if another process published it meanwhile (two runs writing
  the same new path: exactly one succeeds). With ``overwrite`` the last complete write
  wins (``os.replace``); no mix of two writes ever exists.
- ``--overwrite`` replaces a *file*, or a *folder* holding rsgeo's marker for the same
  kind of output (:func:`claim_folder`), and nothing else: a file output never replaces
  a folder, and an output equal to (or inside) one of the command's inputs is refused.
- ``--overwrite`` on a folder output (:func:`claim_folder`) moves the earlier folder aside
  to a hidden sibling; it is removed only once the new run has succeeded (a training run:
  saved its first checkpoint, :func:`keep_new`) and put back when the run fails or is
  stopped before that (:func:`put_back`, :func:`replacing`).
- Missing parent folders of an output are created (and removed again if the write fails).
- Several outputs of one run (damage-map's rasters and vectors) are published together:
  inside :func:`all_or_nothing` every :func:`atomic_path` keeps its finished temporary
  file, and all are published when the block succeeds; when it fails none is.
- A write that failed for want of room (disk full, quota, file size limit) is reported as
  :class:`~rsgeo.errors.OutputWriteError` naming the output and the OS's reason
  (:func:`write_problem`), however the writer put it (GDAL, sqlite and torch say "write
  error" or worse). A writer that swallowed such a failure (GDAL flushing at close, the
  GeoJSON driver) is caught the same way before publishing: the finished temporary file
  must still take one more file-system block, else it is not published. (On a disk left
  with less than one free block by a complete write, that write is refused too.)
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterable, Iterator

from rsgeo import __version__
from rsgeo.errors import (NO_ROOM, InputError, OutputExistsError, OutputWriteError,
                          RsgeoError, first_line)

_GROUP: ContextVar[list | None] = ContextVar("rsgeo_output_group", default=None)
MARKER = ".rsgeo.json"   # {"kind": ...} in every folder rsgeo creates as an output
LEGACY = {"pretrain": ("config.yaml",), "finetune": ("config.yaml",),
          "chips": ("dataset.json",), "demo": ("summary.json",)}


def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(p)))


class InputSet:
    """The inputs of a run, resolved once: :meth:`refuse` checks an output against all of
    them in time independent of their number (a folder of 5,000 tiles is checked in
    milliseconds, not in minutes of pairwise path comparisons)."""

    def __init__(self, inputs: Iterable = ()):
        self.paths: dict[Path, object] = {}      # resolved input -> as given
        self.folders: set[Path] = set()          # inputs that are folders
        self.holders: dict[Path, object] = {}    # every folder above an input -> that input
        for src in inputs or ():
            if src is None or "://" in str(src):
                continue
            s = _resolved(src)
            if s in self.paths:
                continue
            self.paths[s] = src
            if s.is_dir():
                self.folders.add(s)
            for parent in s.parents:
                self.holders.setdefault(parent, src)

    def refuse(self, out: str | os.PathLike) -> None:
        """InputError if ``out`` is one of the inputs, inside an input folder, or holds an
        input."""
        o = _resolved(out)
        hit = o if o in self.paths else next((a for a in o.parents if a in self.folders), None)
        if hit is not None:
            raise InputError(f"the output would replace the input {self.paths[hit]}", out)
        if o in self.holders:
            raise InputError(f"the output folder holds the input {self.holders[o]}", out)


def refuse_inputs(out: str | os.PathLike, inputs: Iterable | InputSet) -> None:
    """InputError if ``out`` is one of ``inputs``, inside an input folder, or holds an input
    (``inputs``: paths, or an :class:`InputSet` made once for many outputs)."""
    (inputs if isinstance(inputs, InputSet) else InputSet(inputs)).refuse(out)


def check_output(path: str | os.PathLike, overwrite: bool = False, *,
                 inputs: Iterable | InputSet = ()) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``, any folder, and any input path
    (``inputs``: paths, or an :class:`InputSet` made once when checking many outputs)."""
    p = Path(path)
    refuse_inputs(p, inputs)
    if p.is_dir():
        raise InputError("is a folder; this output is a file and rsgeo never replaces a folder "
                         "with one (give a file name)", p)
    if p.exists() and not p.is_file():  # a pipe, device or socket: never replaced
        raise InputError("is not a regular file (a pipe, device or socket); rsgeo writes and "
                         "replaces only files", p)
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise OutputExistsError(p)
    check_parents(p)
    return p


def check_parents(path: Path) -> None:
    """InputError naming the nearest existing parent of ``path`` when it is not a folder
    (``-o notes.txt/out.tif``): the output could not be created under it."""
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError("is a file, not a folder", parent)
            break


def temp_name(path: Path) -> Path:
    """A hidden temporary sibling of ``path`` keeping its suffix (drivers read it)."""
    return path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")


TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{8}(\.[^.]*)?$")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (:func:`temp_name`) a killed writer left in ``folder``
    (SIGKILL skips the cleanup); returns them. Only for a folder no other process is
    writing, e.g. a run folder being resumed."""
    gone = []
    for p in Path(folder).glob(".*.tmp-*") if Path(folder).is_dir() else ():
        if TEMP_NAME.match(p.name) and (p.is_file() or p.is_symlink()):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; returns those created (outermost first)."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            pass
        except OSError as e:
            raise InputError(f"cannot create the output folder ({e.strerror})", d) from None
    return list(reversed(missing))


def publish(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``final``; exclusive unless ``overwrite``. An OS
    refusal is one line naming ``final`` (:func:`_publish_failed`)."""
    try:
        _publish(tmp, final, overwrite)
    except OSError as e:
        raise _publish_failed(e, final) from e


REFUSED = {errno.EACCES, errno.EPERM, errno.EROFS}  # the system will not let us: bad input


def _publish_failed(e: OSError, final: Path) -> RsgeoError:
    """The one-line error for a failed rename onto ``final``: a refusal (permission, a
    read-only or immutable file) is bad input (exit 2), anything else a write failure."""
    if e.errno in REFUSED:
        what = "replace the existing output" if final.exists() else "write the output here"
        return InputError(f"cannot {what} ({e.strerror or os.strerror(e.errno)})", final)
    return OutputWriteError(f"{reason(e)} (publishing the finished file failed)", final)


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.is_dir() and not final.is_symlink():
        if not tmp.is_dir():
            raise InputError("is a folder; rsgeo never replaces a folder with a file", final)
        if not overwrite:
            raise OutputExistsError(final)
        _replaceable_folder(final, marker_kind(tmp))
        shutil.rmtree(final)
        os.rename(tmp, final)
        return
    if overwrite:
        os.replace(tmp, final)
        return
    if tmp.is_dir():
        if final.exists() or final.is_symlink():
            raise _raced(final)
        os.rename(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise _raced(final) from None
    except OSError as e:  # file systems without hard links: best effort
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if final.exists() or final.is_symlink():
            raise _raced(final) from None
        os.replace(tmp, final)
        return
    tmp.unlink()


def _raced(final: Path) -> InputError:
    return InputError("output appeared while this run was writing it (another run writing the "
                      "same path?); nothing was replaced (use --overwrite to replace it)", final)


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, *,
                inputs: Iterable = ()) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; publish it onto ``path`` on success.

    The overwrite guard runs first, so an existing output is refused before any work.
    Folders work too (the temporary folder is renamed as a whole).
    """
    final = Path(path)
    if not (final.is_dir() and overwrite):
        final = check_output(path, overwrite, inputs=inputs)
    else:
        refuse_inputs(final, inputs)
    created = make_parents(final)
    tmp = temp_name(final)
    try:
        probe_writable(tmp, final)
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{final}: writer produced no output")
        problem = write_problem(tmp)   # a writer that swallowed a failed write (see above)
        if problem:
            raise OutputWriteError(f"{problem} (write failed)", final)
        plain_mode(tmp)
        group = _GROUP.get()
        if group is not None:   # all_or_nothing publishes it with the others
            group.append((tmp, final, overwrite, created))
            return
        publish(tmp, final, overwrite)
    except BaseException as e:
        ours = isinstance(e, RsgeoError) or not isinstance(e, Exception)  # said, or a stop
        problem = None if ours else write_problem(tmp if tmp.exists() else final.parent)
        remove(tmp)
        _remove_created(created)
        if problem is None and not ours:
            problem = named_reason(e)   # the writer removed its part-written file, and said why
        if problem:
            raise OutputWriteError(f"{problem} (write failed)", final) from e
        if isinstance(e, Exception) and not isinstance(e, RsgeoError) and tmp.name in str(e):
            # the user never typed the hidden temporary name: report the output they asked for
            msg = first_line(e).replace(str(tmp), str(final)).replace(tmp.name, final.name)
            raise RsgeoError(f"writing failed ({msg})", final) from e
        raise


def plain_mode(tmp: Path) -> None:
    """Give a finished file the permissions a plain ``open(path, "w")`` would (0666 less the
    umask): some writers create theirs owner-only (safetensors: 0600), which left a
    published encoder unreadable to the user's group, unlike every other output."""
    if tmp.is_file() and not tmp.is_symlink():
        os.chmod(tmp, 0o666 & ~_UMASK)


_UMASK = os.umask(0o022)  # reading the umask means setting it: read once, at import, put back
os.umask(_UMASK)



def named_reason(e: BaseException) -> str | None:
    """The lack of room ``e`` (or an exception it was raised from) reports, in the OS's words
    (``no space left on device``): an OSError with that errno, or a library's message quoting
    the OS (safetensors: ``I/O error: No space left on device (os error 28)``; "file too
    large" alone is too common a phrase to count, its errno is)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_ROOM:
            return reason(e)
        text = str(e).lower()
        for code in sorted(NO_ROOM):
            said = {f"os error {code})", f"[errno {code}]"}
            if code != errno.EFBIG:
                said.add(os.strerror(code).lower())
            if any(s in text for s in said):
                return reason(OSError(code, os.strerror(code)))
        e = e.__cause__ or e.__context__
    return None


def reason(e: OSError) -> str:
    """The OS's words for ``e``, as in a sentence: ``no space left on device``."""
    text = e.strerror or (os.strerror(e.errno) if e.errno else first_line(e))
    return text[:1].lower() + text[1:]


def write_problem(path: Path) -> str | None:
    """Why writing at ``path`` fails now (``"no space left on device"``); None if it does not.

    Writes one file-system block (4 KiB on most) and a byte past the end of the file
    ``path`` (then cuts it back), or as much to a new file in the folder ``path`` (removed
    again): enough to need a new block, so a disk that is full, a quota or a file size
    limit that was hit fails it again and the OS names the reason, which GDAL, sqlite and
    torch do not pass on ("write error", "unexpected pos"). Only ever called on rsgeo's own
    temporary files and output folders.
    """
    try:
        new = not path.is_file()
        target = path / f".rsgeo-probe.tmp-{uuid.uuid4().hex[:8]}" if new else path
        fd = os.open(target, os.O_WRONLY | (os.O_CREAT | os.O_EXCL if new else 0), 0o600)
    except OSError:
        return None   # no file to write (a folder gone or not ours): nothing to say
    try:
        end = at = os.fstat(fd).st_size
        vfs = os.fstatvfs(fd)   # the unit space is allocated in (capped: 1 MiB)
        data = memoryview(bytes(min(vfs.f_frsize or vfs.f_bsize or 4096, 1 << 20) + 1))
        while data:   # a file size limit gives a short write first, then EFBIG
            n = os.pwrite(fd, data, at)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            data, at = data[n:], at + n
        os.ftruncate(fd, end)
    except OSError as e:
        return reason(e)
    finally:
        os.close(fd)
        if new:
            target.unlink(missing_ok=True)
    return None


def write_work_text(path: Path, text: str) -> Path:
    """Write a work file (a VRT in a run's work folder) that nobody else reads while it is
    written; a failed write (disk full) is one line naming it, not a bare OSError."""
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise OutputWriteError(f"{reason(e)} (write failed)", path) from e
    return Path(path)


@contextmanager
def parents_made(path: str | os.PathLike) -> Iterator[None]:
    """The missing parent folders of ``path`` made for the block (work files beside an
    output, before :func:`atomic_path` writes it); when the block fails or is stopped, those
    it made are removed again while empty."""
    created = make_parents(Path(path))
    try:
        yield
    except BaseException:
        _remove_created(created)
        raise


def _remove_created(created: list[Path]) -> None:
    """Remove the folders an output created (innermost first) while they are empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """Publish the outputs written inside the block (through :func:`atomic_path`, in this
    thread) together when it succeeds; when it fails or is interrupted none is published,
    and an existing output it would have replaced stays as it was.

    Publishing is a rename per file. Should one of them fail (another run published the
    same new name meanwhile, an existing output that may not be replaced), the outputs
    this block had already published are removed again and those they replaced put back
    (:func:`_keep_earlier`). Inside an outer block the outputs join the outer one.
    """
    if _GROUP.get() is not None:
        yield
        return
    pending: list = []
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        _drop(pending)
        raise
    finally:
        _GROUP.reset(token)
    published, kept = [], _keep_earlier(pending)
    try:
        for tmp, final, overwrite, _ in pending:
            publish(tmp, final, overwrite)
            published.append(final)
    except BaseException:
        for final in published:   # not remove(): an earlier side file is not this run's
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final, ignore_errors=True)
            else:
                final.unlink(missing_ok=True)
        for final, earlier in kept:   # --overwrite: the outputs it replaced come back
            try:
                if final in published:
                    os.replace(earlier, final)
                else:
                    earlier.unlink()
            except OSError:   # left under its hidden name rather than lost
                pass
        _drop(pending)
        raise
    for _, earlier in kept:
        earlier.unlink(missing_ok=True)


def _keep_earlier(pending: list) -> list[tuple[Path, Path]]:
    """A hard link to each existing file that ``pending`` replaces (``--overwrite``), so a
    publish failing half-way (a read-only or immutable file among them, a full disk) can
    put every earlier output back; ``(final, link)`` pairs. A file that cannot be linked
    (a file system without hard links, an immutable file) goes without: the rename onto it
    is then the first to fail or succeeds like the others."""
    kept = []
    try:
        for _, final, overwrite, _ in pending:
            if overwrite and final.is_file() and not final.is_symlink():
                link = temp_name(final)
                try:
                    os.link(final, link)
                except OSError:
                    continue
                kept.append((final, link))
    except BaseException:
        for _, link in kept:
            link.unlink(missing_ok=True)
        raise
    return kept


def _drop(pending: list) -> None:
    """Remove the temporary files of ``pending``, then the folders their outputs created."""
    for tmp, *_ in pending:
        remove(tmp)
    for *_, created in reversed(pending):
        _remove_created(created)


def probe_writable(tmp: Path, final: Path) -> None:
    """InputError naming ``final`` when its folder does not take a new file (``tmp``)."""
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError as e:
        raise InputError(f"cannot write the output here ({e.strerror})", final) from None
    os.close(fd)
    os.unlink(tmp)


def remove(path: Path) -> None:
    """Remove a file or folder if it exists (plus GDAL's .aux.xml side file)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
    Path(str(path) + ".aux.xml").unlink(missing_ok=True)


# ---------------------------------------------------------------------- folder outputs
def marker_kind(folder: Path) -> str | None:
    """The kind recorded in ``folder``'s rsgeo marker (None without one)."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def write_marker(folder: Path, kind: str) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "rsgeo": __version__}) + "\n")


def _replaceable_folder(folder: Path, kind: str | None) -> None:
    """InputError unless ``folder`` is rsgeo's own ``kind`` output and not around the cwd."""
    found = marker_kind(folder)
    legacy = found is None and kind in LEGACY and all((folder / f).is_file() for f in LEGACY[kind])
    if kind is None or (found != kind and not legacy):
        what = f"an rsgeo {kind} folder" if kind else "a folder rsgeo wrote"
        why = f" (it holds rsgeo {found} output)" if found else f" (no {MARKER} marker)"
        raise InputError(f"exists and is not {what}{why}; rsgeo replaces only its own outputs: "
                         "choose a new or empty folder", folder)
    cwd = _resolved(Path.cwd())
    here = _resolved(folder)
    if here == cwd or here in cwd.parents:
        raise InputError("is the current folder or holds it; refusing to replace it", folder)


def _occupied(out: Path, kind: str) -> bool:
    """``out`` holds something besides rsgeo's marker, or another kind's marker."""
    return out.is_dir() and (any(p.name != MARKER for p in out.iterdir())
                             or marker_kind(out) not in (None, kind))


def check_folder_claim(out: str | os.PathLike, kind: str, *, overwrite: bool = False,
                       resume: bool = False, inputs: Iterable = ()) -> Path:
    """The refusals of :func:`claim_folder`, touching nothing (a command checks its output
    folder with it before its slow imports)."""
    out = Path(out)
    refuse_inputs(out, inputs)
    if out.exists() and not out.is_dir():
        raise InputError("is a file, not a folder", out)
    check_parents(out)
    if resume:
        if not out.is_dir():
            raise InputError("--resume: no such run folder", out)
        return out
    if _occupied(out, kind):
        _replaceable_folder(out, kind)
        if not overwrite:
            raise OutputExistsError(out)
    return out


def claim_folder(out: str | os.PathLike, kind: str, *, overwrite: bool = False,
                 resume: bool = False, inputs: Iterable = ()) -> Path:
    """Make ``out`` an empty (or resumable) output folder of ``kind`` carrying rsgeo's marker.

    - ``resume``: ``out`` must exist (its own checks follow); nothing is removed.
    - a non-empty ``out`` is refused without ``overwrite``; with it, ``out`` is replaced
      only if its marker says it is an rsgeo ``kind`` output (older runs: the files in
      :data:`LEGACY`) and it is not the current folder or one holding it. The earlier
      folder is moved aside, not removed: the caller ends the claim with :func:`keep_new`
      once its run has succeeded, or :func:`put_back` when it failed (:func:`replacing`
      does both); until then it stays under a hidden name beside ``out``.
    - the marker is written first, so a failed or killed run leaves a folder that its own
      rerun with ``--overwrite`` (or ``--resume``) accepts.
    """
    out = check_folder_claim(out, kind, overwrite=overwrite, resume=resume, inputs=inputs)
    if resume:
        return out
    # --overwrite: the earlier folder is kept aside until the new run has succeeded
    _EARLIER[_key(out)] = _move_aside(out) if _occupied(out, kind) else None
    try:
        _make_marked(out, kind)
    except BaseException:
        put_back(out)
        raise
    return out


def _make_marked(out: Path, kind: str) -> None:
    """Create the folder ``out`` (and its missing parents) holding ``kind``'s marker; on
    failure the folders it created go again."""
    created = make_parents(out) + ([] if out.is_dir() else [out])
    try:  # one line and exit 2, as for file outputs (a raw OSError was an exit-1 failure)
        out.mkdir(exist_ok=True)
    except OSError as e:
        _remove_created(created)
        raise InputError(f"cannot create the output folder ({e.strerror})", out) from None
    try:
        write_marker(out, kind)
    except OSError as e:  # a full disk: the folder this made goes again, nothing half-written
        (out / MARKER).unlink(missing_ok=True)
        _remove_created(created)
        raise OutputWriteError(f"{reason(e)} (write failed)", out / MARKER) from e


EARLIER = ".rsgeo-earlier-"   # .NAME.rsgeo-earlier-XXXXXXXX: an earlier folder kept aside
_EARLIER: dict[Path, Path | None] = {}   # claimed folder -> its earlier output, moved aside


def _key(out: str | os.PathLike) -> Path:
    """The claimed folder as :data:`_EARLIER` knows it (absolute, links not followed: the
    name the earlier folder left and comes back to)."""
    return Path(os.path.abspath(out))


def _move_aside(out: Path) -> Path:
    """Rename the folder ``out`` to a hidden sibling ``.NAME.rsgeo-earlier-XXXXXXXX`` (the
    same file system: one rename, nothing copied); returns the new name."""
    aside = out.with_name(f".{out.name}{EARLIER}{uuid.uuid4().hex[:8]}")
    try:
        os.rename(out, aside)
    except OSError as e:
        raise InputError(f"cannot replace the earlier output ({e.strerror})", out) from None
    return aside


def keep_new(out: str | os.PathLike) -> None:
    """The run that claimed ``out`` has succeeded (a training run: saved a checkpoint):
    remove the earlier folder :func:`claim_folder` moved aside, and any an earlier run into
    ``out`` left there when it was killed outright (SIGKILL). Nothing without a claim."""
    key = _key(out)
    if key not in _EARLIER:
        return
    _EARLIER.pop(key)
    for old in key.parent.glob(f".{glob.escape(key.name)}{EARLIER}*"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


def put_back(out: str | os.PathLike) -> bool:
    """The run that claimed ``out`` failed or was stopped before :func:`keep_new`: its own
    folder goes and the earlier one comes back under its name. Returns whether one came
    back (False without one, or when the system refused: then it stays under its hidden
    name, never lost)."""
    aside = _EARLIER.pop(_key(out), None)
    if aside is None or not aside.is_dir():
        return False
    out = Path(out)
    try:
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        os.rename(aside, out)
    except OSError:
        return False
    return True


@contextmanager
def replacing(out: str | os.PathLike) -> Iterator[None]:
    """The block is the run writing into the claimed folder ``out``: when it fails or is
    stopped, the earlier folder it replaces comes back (:func:`put_back`); when it succeeds,
    the earlier folder is removed (:func:`keep_new`)."""
    try:
        yield
    except BaseException:
        put_back(out)
        raise
    keep_new(out)
