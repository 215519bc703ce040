"""Helpers shared by the real-dataset loaders: checked folders, id lists, index files."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossreid.data.samples import Sample
from crossreid.errors import UserError, UserErrors


def require_dir(path: Path, what: str, fix: str) -> Path:
    """``path`` if it is a folder, else a UserError naming it, ``what`` it should hold and the fix."""
    if not path.is_dir():
        raise UserError(f"{path}: {what} folder not found; {fix}")
    return path


def require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; {fix}")
    return path


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines as ``(line number, text)``; LF or CRLF endings, surrounding spaces stripped."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc}); check the file permissions") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; restore it from the dataset archive") from None
    return [(i, line.strip()) for i, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1)
            if line.strip()]


def read_id_list(path: Path) -> list[int]:
    """Person ids from a comma-separated list (SYSU ``exp/*.txt``, LLCM ``test_id.txt``).

    Ids may be zero-padded; line breaks between entries and a missing final newline are accepted.
    """
    ids: list[int] = []
    for number, line in read_text_lines(path):
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            if not item.isdigit():
                raise UserError(f"{path}:{number}: {item!r} is not a person id; "
                                "the file must hold comma-separated integers")
            ids.append(int(item))
    if not ids:
        raise UserError(f"{path}: holds no person ids; restore it from the dataset archive")
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: lists a person id twice; restore it from the dataset archive")
    return ids


def load_mat(path: Path) -> dict:
    """A MATLAB file's variables (scipy, no ``squeeze_me``); v7.3/HDF5 or corrupt files are a UserError."""
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except (OSError, ValueError, NotImplementedError) as exc:  # NotImplementedError: MATLAB v7.3 (HDF5)
        raise UserError(f"{path}: unreadable MATLAB file ({exc}); restore it from the dataset archive") from None


def read_id_mat(path: Path, key: str = "id") -> list[int]:
    """Person ids from a MATLAB file holding a numeric array under ``key`` (SYSU ``*_id.mat``)."""
    mat = load_mat(path)
    if key not in mat:
        raise UserError(f"{path}: no variable {key!r}; expected the dataset's split file")
    values = np.asarray(mat[key], dtype=np.float64).ravel()
    if values.size == 0 or not np.all(values == np.round(values)) or np.any(values < 0):
        raise UserError(f"{path}: {key!r} must hold non-negative integer ids")
    return [int(v) for v in values]


@dataclass(frozen=True)
class IndexLine:
    """One ``<relative path> <label>`` line of an index file."""

    source: Path
    number: int
    relpath: str
    label: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.number}"


def read_index_file(path: Path) -> list[IndexLine]:
    """Parse an index file of ``<relpath> <label>`` lines (RegDB, LLCM).

    LF or CRLF endings; blank lines skipped; every malformed line is reported (UserErrors naming file:line).
    """
    out: list[IndexLine] = []
    bad: list[str] = []
    for number, line in read_text_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            bad.append(f"{path}:{number}: malformed line {line[:80]!r}; expected '<relative path> <integer label>'")
            continue
        out.append(IndexLine(path, number, parts[0].replace("\\", "/"), int(parts[1])))
    if bad:
        raise UserErrors(bad)
    if not out:
        raise UserError(f"{path}: index file is empty; restore it from the dataset archive")
    return out


def label_problems(lines: Sequence[IndexLine], pids: Sequence[int]) -> list[str]:
    """The label column of one index file against the person ids its paths name (the loaders take
    the id from the path): a negative label, a person under two labels, or one label for two
    persons is a corrupt file. Each is named by file:line."""
    out: list[str] = []
    label_of: dict[int, IndexLine] = {}
    pid_of: dict[int, tuple[int, IndexLine]] = {}
    for line, pid in zip(lines, pids):
        if line.label < 0:
            out.append(f"{line.where}: negative label {line.label}; labels are 0..N-1, restore the index file")
            continue
        first = label_of.setdefault(pid, line)
        if first.label != line.label:
            out.append(f"{line.where}: person {pid} has label {line.label} here but {first.label} at line "
                       f"{first.number}; restore the index file")
        other = pid_of.setdefault(line.label, (pid, line))
        if other[0] != pid:
            out.append(f"{line.where}: label {line.label} is person {pid} here but person {other[0]} at line "
                       f"{other[1].number}; restore the index file")
    return out


def read_listed(path: Path, parse: Callable[[IndexLine], Sample]) -> list[Sample]:
    """The samples of an index file, one per line via ``parse`` (each remembers its file:line as
    ``source``); every bad line, including a bad label, is reported together (UserErrors)."""
    lines = read_index_file(path)
    samples, bad = [], []
    for line in lines:
        try:
            samples.append(dataclasses.replace(parse(line), source=line.where))
        except UserError as exc:
            bad.append(str(exc))
    if not bad:
        bad = label_problems(lines, [s.pid for s in samples])
    if bad:
        raise UserErrors(bad)
    return samples


def match_name(pattern: re.Pattern[str], name: str, where: str, expected: str) -> re.Match[str]:
    """Match a file name against the dataset's naming rule, or raise naming ``where``."""
    m = pattern.fullmatch(name)
    if m is None:
        raise UserError(f"{where}: file name {name!r} does not follow the dataset naming "
                        f"{expected}; rename or remove it")
    return m


def parse_int_dir(path: Path, what: str) -> int:
    """The integer a person / camera folder is named after (``0012`` -> 12)."""
    if not path.name.isdigit():
        raise UserError(f"{path}: {what} folder name must be an integer; move or remove it")
    return int(path.name)


def list_files(folder: Path, suffix: str) -> list[Path]:
    """Visible files in ``folder`` with ``suffix`` (case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() == suffix and not p.name.startswith(".") and p.is_file())


def require_files(samples: Sequence[Sample], listed_in: str) -> None:
    """Raise one UserError for the first missing file (where it is listed, and how many more are missing)."""
    missing = [s for s in samples if not s.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{missing[0].path}: listed in {missing[0].source or listed_in} but missing{more}; "
                        "re-extract the dataset or run `crossreid check` for the full list")


def hold_out_ids(pids: Iterable[int], count: int, seed: int) -> set[int]:
    """``count`` ids drawn reproducibly from ``pids`` (for datasets without an official val split)."""
    ordered = sorted(set(pids))
    if count < 0 or count >= len(ordered):
        raise UserError(f"val_ids={count} must be between 0 and {len(ordered) - 1} "
                        f"(the dataset has {len(ordered)} training ids)")
    rng = np.random.default_rng(seed)
    return {ordered[i] for i in rng.choice(len(ordered), size=count, replace=False)}


def split_train_val(samples: list[Sample], val_pids: set[int]) -> tuple[list[Sample], list[Sample]]:
    train = [s for s in samples if s.pid not in val_pids]
    val = [s for s in samples if s.pid in val_pids]
    return train, val
