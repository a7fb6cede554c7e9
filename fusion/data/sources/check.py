"""`check_pairs` (behind `fusion data sources --check`): decode every file of the records
and report every offending file at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fusion.data.sources.decode import Decoded, decode_image
from fusion.data.sources.records import MaskedImage, Problem, Report, Sources

# Modalities whose content must be gray; a gray image stored as RGB (TNO) passes.
GRAY_MODALITIES = frozenset({"ir", "lwir", "mri", "ct"})


def _size(d: Decoded) -> str:
    return f"{d.shape[1]}x{d.shape[0]}"


def _roles(rec) -> list[tuple[Path, str]]:
    """(image file, role) of one record: what check_pairs decodes."""
    if isinstance(rec, MaskedImage):
        # a .npz disparity map is an array, not an image: the synthesis reads and checks it
        return [(rec.image, "image")] + ([(rec.mask, "mask")] if rec.mask and rec.mask.suffix != ".npz" else [])
    return list(zip(rec.paths, rec.modalities)) + ([(rec.gt, "gt")] if rec.gt is not None else [])


def _check_record(rec, decode: Callable[[Path], Decoded | str]) -> list[Problem]:
    problems: list[Problem] = []
    decoded = []
    for path, role in _roles(rec):
        d = decode(path)
        if isinstance(d, str):
            problems.append(Problem(path, d))
            continue
        if role in GRAY_MODALITIES and d.colourful:
            problems.append(Problem(path, f"{role} must be gray but has {d.channels} differing colour channels"))
        if isinstance(rec, MaskedImage) and role == "mask" and d.all_zero:
            problems.append(Problem(path, "mask is all zero (nothing salient to focus on)"))
        decoded.append((path, role, d))
    if decoded:
        ref_path, ref_role, ref = decoded[0]
        for path, role, d in decoded[1:]:
            if d.shape != ref.shape:
                problems.append(
                    Problem(
                        path, f"size {_size(d)} ({role}) differs from its partner {ref_path} ({ref_role}, {_size(ref)})"
                    )
                )
    return problems


def check_pairs(pairs: Sequence, *, skip_bad: bool = False, workers: int = 1):
    """Decode every image of `pairs` (SourcePair or MaskedImage records).

    Checks: readable and complete (truncated JPEG/PNG), 8/16-bit, 1/3/4 channels, gray content
    for ir/mri/ct, equal sizes within a pair (gt included), DUTS masks not all zero. Problems a
    loader dropped under skip_bad=True (`pairs.problems`) head the report.

    skip_bad=False: returns the (empty) Report, or raises one DataError naming every bad file.
    skip_bad=True: returns (good_pairs, report). `workers` processes decode (0 = every core).
    """
    report = Report(getattr(pairs, "problems", ()))
    cache: dict[Path, Decoded | str] = {}
    if workers != 1:
        from fusion.data.parallel import map_ordered

        paths = list(dict.fromkeys(path for rec in pairs for path, _ in _roles(rec)))
        cache.update(zip(paths, map_ordered(decode_image, paths, workers)))

    def decode(path: Path) -> Decoded | str:
        if path not in cache:
            cache[path] = decode_image(path)
        return cache[path]

    good = []
    for rec in pairs:
        found = _check_record(rec, decode)
        report += found
        if not found:
            good.append(rec)
    if skip_bad:
        return Sources(good, report, getattr(pairs, "root", None)), report
    if report:
        where = getattr(pairs, "root", None)
        raise report.error(f"{where}: checking sources" if where else "checking sources")
    return report


def checked(pairs: list, skip_bad: bool, workers: int = 1) -> tuple[list, Report]:
    """(usable pairs, report of what was left out): every bad file raises one DataError
    unless skip_bad, which drops the pairs concerned and reports them instead."""
    if skip_bad:
        return check_pairs(pairs, skip_bad=True, workers=workers)
    check_pairs(pairs, workers=workers)
    return pairs, Report()
