"""Source registry: loaders for the published layouts of real image-fusion datasets.

Each loader lists files (it never decodes pixels, except `mef-scenes`, which must look at
brightness to order exposures) and returns a deterministic, id-sorted list of records:
`SourcePair` for fusion inputs, `MaskedImage` for DUTS (synthesis input). `check_pairs`
decodes everything and reports every offending file at once.

Supported layouts (`LAYOUTS`), `root` being the folder given as `path`:

=============  ==============  ===============================================================
layout         task            folder shape
=============  ==============  ===============================================================
tno            ir-vis          root/{ir,vi}/<name>.<ext>, same stems in both
roadscene      ir-vis          root/{cropinfrared,crop_LR_visible}/<name> (published) or
                               root/{ir,vi}/<name>; crop_HR_visible is NOT aligned, never used
msrs           ir-vis          root/{ir,vi}/<name>, or root/<split>/{ir,vi}/ with split=train|test
kaist          ir-vis          root/[images/]setNN/VNNN/{lwir,visible}/INNNNN.jpg;
                               group = "setNN/VNNN"; option sets=[set00, ...] (default: all)
lytro          multi-focus     root/<scene>-A.<ext> + <scene>-B.<ext> [+ -C ...]; letters run
                               A, B, C... without gaps; triples=true also loads root/triples/
                               (ids "triples/<scene>")
mffw           multi-focus     root/source_1/, root/source_2/ [, source_3 ...] and optional
                               root/full_clear/ (ground truth), same stems (MFFW / MFI-WHU)
mef-scenes     multi-exposure  root/<scene>/<2..N exposures>; ordered under -> over by mean
                               brightness (order=brightness, default) or natural name order
                               (order=name); group = scene
u2fusion-mef   multi-exposure  root/dataset*/{ue,oe}/<name> (or root/{ue,oe}/ directly) ->
                               paths [ue, oe]
harvard        medical         root/{CT,PET,SPECT}-MRI/{MRI,<X>}/<case><3-digit slice>.png
                               (or root = one X-MRI folder) -> paths [MRI, X]; group = case
                               id; option subsets=[CT-MRI, ...]
duts           (synthesis)     root/[DUTS-TR/]DUTS-TR-Image/*.jpg + DUTS-TR-Mask/*.png ->
                               MaskedImage(image, mask); split=TR|TE
photos         (synthesis)     root/images/<stem>.<ext> [+ root/masks/<stem>.png|.npz] ->
                               MaskedImage(image, mask or None: saliency is computed); the
                               embedded default dataset
folders        any (task=)     root/<folders[0]>/, root/<folders[1]>/ ... same stems; generic
=============  ==============  ===============================================================

Modality names: ir-vis ["ir", "vis"]; Lytro ["near", "far"] (checked on the shared copy:
-A focuses near, -B far; triples A/B/C = near/mid/far); mffw ["source_1", "source_2", ...];
multi-exposure ["under", "over"] (N > 2: "under", "mid1", ..., "over"); medical
["mri", "ct" | "pet" | "spect"].

Groups (for leakage-free splits, `split_by_group`): KAIST sequence, Harvard case id,
MEF scene; elsewhere every pair is its own group. Harvard case ids are NOT prefixed with
the subset: the same number in CT-MRI and SPECT-MRI stays on one side of a split, since
nothing in the data says it is a different patient.

Problems found while listing (a file without its partner, an empty folder, a file name
that does not follow the layout) raise one DataError naming every such file; with
`skip_bad=True` the loader drops them and keeps them in `result.problems`, which
`check_pairs` puts at the top of its report.

SOURCES_EXAMPLE - the `sources:` block of params.yaml (relative paths resolve against the
folder of params.yaml, passed to `load_source(..., base=...)`)::

    sources:
      tno:       {layout: tno, path: ../shared/data/irvis/TNO42}
      roadscene: {layout: roadscene, path: ../shared/data/irvis/RoadScene221}
      msrs:      {layout: msrs, path: /data/MSRS, split: train}
      kaist:     {layout: kaist, path: /data/kaist, sets: [set00, set01]}
      lytro:     {layout: lytro, path: ../shared/data/mf/Lytro20, triples: true}
      mfi_whu:   {layout: mffw, path: /data/MFI-WHU}
      mef:       {layout: mef-scenes, path: ../shared/data/mef/IFCNN_ME6, order: brightness}
      u2f_mef:   {layout: u2fusion-mef, path: ../shared/data/mef/U2Fusion_ME8}
      harvard:   {layout: harvard, path: ../shared/data/medical/Harvard, subsets: [CT-MRI]}
      duts:      {layout: duts, path: /data/DUTS, skip_bad: true}
      mine:      {layout: folders, path: /data/x, task: ir-vis, folders: [thermal, rgb]}
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import cv2
import numpy as np

from fusion.errors import ConfigError, DataError
from fusion.io import IMAGE_SUFFIXES, list_images

TASKS = ("ir-vis", "multi-focus", "multi-exposure", "medical")

# Modalities whose content must be gray; a gray image stored as RGB (TNO) passes.
GRAY_MODALITIES = frozenset({"ir", "lwir", "mri", "ct"})
# Mean |R-G| + |G-B| above this is colour; JPEG-coded gray stays well under 1.
_GRAY_TOLERANCE = 2.0


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SourcePair:
    """2..N registered source images of one scene, in the order the task expects."""

    id: str
    task: str
    paths: tuple[Path, ...]
    modalities: tuple[str, ...]
    group: str
    gt: Path | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"SourcePair {self.id}: task {self.task!r} not one of {TASKS}")
        if len(self.paths) < 2 or len(self.paths) != len(self.modalities):
            raise ValueError(f"SourcePair {self.id}: needs >= 2 paths and one modality per path")


@dataclass(frozen=True)
class MaskedImage:
    """A photograph and its saliency mask (DUTS, or a disparity map as .npz), input of the
    multi-focus synthesis; mask None: the synthesis computes a saliency map."""

    id: str
    image: Path
    mask: Path | None
    group: str


class Problem(NamedTuple):
    path: Path
    problem: str


class Report(list):
    """A list of Problem(path, problem); str() renders one line per offending file."""

    def render(self) -> str:
        return "\n".join(f"  {p.path}: {p.problem}" for p in self)

    def __str__(self) -> str:
        return self.render()

    def error(self, headline: str) -> DataError:
        files = len({p.path for p in self})
        return DataError(f"{headline}: {len(self)} problem(s) in {files} file(s)/folder(s)\n{self.render()}")


class Sources(list):
    """Loader result: the records, plus what the loader dropped under skip_bad=True."""

    def __init__(self, items: Iterable = (), problems: Iterable[Problem] = (), root: Path | None = None):
        super().__init__(items)
        self.problems = Report(problems)
        self.root = root


# --------------------------------------------------------------------------- listing helpers


def _root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: source folder not found")
    return root


def _find_folder(root: Path, candidates: Sequence[str], role: str) -> Path:
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no {role} folder; looked for {', '.join(c + '/' for c in candidates)}")


def _by_stem(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in list_images(folder):
        if p.stem in out:
            problems.append(Problem(p, f"same name as {out[p.stem].name}: which one is the source is ambiguous"))
            continue
        out[p.stem] = p
    if not out:
        problems.append(Problem(folder, f"folder is empty (no {'/'.join(IMAGE_SUFFIXES)} images)"))
    return out


def _match(folders: Sequence[Path], problems: list[Problem]) -> list[tuple[str, list[Path]]]:
    """Stems present in every folder; each file missing a partner becomes a problem."""
    maps = [_by_stem(f, problems) for f in folders]
    if not all(maps):
        return []  # the empty folder is the problem; listing every orphan would bury it
    matched = []
    for stem in sorted(set().union(*maps)):
        found = [m.get(stem) for m in maps]
        if all(found):
            matched.append((stem, found))
            continue
        missing = ", ".join(f"{f}/" for f, p in zip(folders, found) if p is None)
        for p in found:
            if p is not None:
                problems.append(Problem(p, f"no partner named {stem}.* in {missing}"))
    return matched


def _finish(root: Path, items: list, problems: list[Problem], skip_bad: bool, what: str) -> Sources:
    report = Report(sorted(problems, key=lambda p: str(p.path)))
    if report and not skip_bad:
        raise report.error(f"{root}: listing {what}") from None
    if not items:
        msg = f"{root}: no {what} found"
        raise (report.error(msg) if report else DataError(msg))
    items = sorted(items, key=lambda r: r.id)
    ids = [r.id for r in items]
    assert len(set(ids)) == len(ids), f"{root}: duplicate ids"  # loaders build ids from unique stems
    return Sources(items, report, root)


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _folder_pairs(root: Path, dirs: Sequence[Path], task: str, modalities: Sequence[str], skip_bad: bool,
                  gt_dir: Path | None = None, prefix: str = "", problems: list[Problem] | None = None,
                  finish: bool = True):
    problems = [] if problems is None else problems
    gts = _by_stem(gt_dir, problems) if gt_dir is not None else {}
    items = []
    for stem, paths in _match(dirs, problems):
        gt = None
        if gt_dir is not None:
            gt = gts.get(stem)
            if gt is None:
                if gts:  # an empty gt folder is already reported once
                    problems.append(Problem(paths[0], f"no ground truth named {stem}.* in {gt_dir}/"))
                continue
        pid = prefix + stem
        items.append(SourcePair(pid, task, tuple(paths), tuple(modalities), pid, gt))
    if not finish:
        return items
    return _finish(root, items, problems, skip_bad, f"{task} pairs")


# --------------------------------------------------------------------------- loaders


def load_folders(root: str | Path, *, folders: Sequence[str], task: str, modalities: Sequence[str] | None = None,
                 gt: str | None = None, skip_bad: bool = False) -> Sources:
    """Generic: root/<folders[i]>/ hold the i-th source of each pair under the same stem."""
    root = _root(root)
    if task not in TASKS:
        raise ConfigError(f"task: {task!r} is not one of {', '.join(TASKS)}")
    if len(folders) < 2:
        raise ConfigError(f"folders: needs at least 2 folders, got {list(folders)}")
    modalities = list(modalities) if modalities else list(folders)
    if len(modalities) != len(folders):
        raise ConfigError(f"modalities: {len(modalities)} names for {len(folders)} folders")
    dirs = [_find_folder(root, [f], f"source {i + 1}") for i, f in enumerate(folders)]
    gt_dir = _find_folder(root, [gt], "ground-truth") if gt else None
    return _folder_pairs(root, dirs, task, modalities, skip_bad, gt_dir)


def _irvis(root: Path, ir: Sequence[str], vi: Sequence[str], skip_bad: bool) -> Sources:
    dirs = [_find_folder(root, ir, "infrared"), _find_folder(root, vi, "visible")]
    return _folder_pairs(root, dirs, "ir-vis", ["ir", "vis"], skip_bad)


def load_tno(root: str | Path, *, skip_bad: bool = False) -> Sources:
    return _irvis(_root(root), ["ir"], ["vi"], skip_bad)


def load_roadscene(root: str | Path, *, skip_bad: bool = False) -> Sources:
    # crop_HR_visible is deliberately not a candidate: it is not pixel-aligned with the IR.
    return _irvis(_root(root), ["cropinfrared", "ir"], ["crop_LR_visible", "vi"], skip_bad)


def load_msrs(root: str | Path, *, split: str | None = None, skip_bad: bool = False) -> Sources:
    root = _root(root)
    if split is not None:
        root = _find_folder(root, [split], f"split {split!r}")
    return _irvis(root, ["ir"], ["vi"], skip_bad)


_SET = re.compile(r"^set\d{2}$")
_SEQ = re.compile(r"^V\d{3}$")


def load_kaist(root: str | Path, *, sets: Sequence[str | int] | None = None, skip_bad: bool = False) -> Sources:
    root = _root(root)
    has_sets = any(_SET.match(p.name) for p in root.iterdir())
    base = root / "images" if (root / "images").is_dir() and not has_sets else root
    available = sorted(p.name for p in base.iterdir() if p.is_dir() and _SET.match(p.name))
    if not available:
        raise DataError(f"{base}: no KAIST set folders (looked for setNN/VNNN/{{lwir,visible}}/)")
    if sets is None:
        chosen = available
    else:
        chosen = [f"set{s:02d}" if isinstance(s, int) else str(s) for s in sets]
        absent = [s for s in chosen if s not in available]
        if absent:
            raise DataError(f"{base}: requested set(s) {', '.join(absent)} not found; "
                            f"available: {', '.join(available)}")
    problems: list[Problem] = []
    items = []
    for s in chosen:
        seqs = sorted(p for p in (base / s).iterdir() if p.is_dir() and _SEQ.match(p.name))
        if not seqs:
            problems.append(Problem(base / s, "no VNNN sequence folders"))
        for seq in seqs:
            dirs = [seq / "lwir", seq / "visible"]
            absent_dirs = [d for d in dirs if not d.is_dir()]
            if absent_dirs:
                problems.append(Problem(seq, f"missing {', '.join(d.name + '/' for d in absent_dirs)}"))
                continue
            group = f"{s}/{seq.name}"
            for stem, paths in _match(dirs, problems):
                items.append(SourcePair(f"{group}/{stem}", "ir-vis", tuple(paths), ("ir", "vis"), group))
    return _finish(root, items, problems, skip_bad, "KAIST frames")


_FOCUS = re.compile(r"^(?P<scene>.+)-(?P<letter>[A-Za-z])$")


def _focus_names(n: int) -> tuple[str, ...]:
    if n == 2:
        return ("near", "far")
    return ("near", *(f"mid{i}" if n > 3 else "mid" for i in range(1, n - 1)), "far")


def _lytro_dir(folder: Path, prefix: str, problems: list[Problem]) -> list[SourcePair]:
    scenes: dict[str, dict[str, Path]] = {}
    for p in list_images(folder):
        m = _FOCUS.match(p.stem)
        if not m:
            problems.append(Problem(p, "name does not follow <scene>-A / <scene>-B"))
            continue
        letter = m["letter"].upper()
        if letter in scenes.setdefault(m["scene"], {}):
            problems.append(Problem(p, f"second file for {m['scene']}-{letter}"))
            continue
        scenes[m["scene"]][letter] = p
    if not scenes:
        problems.append(Problem(folder, "folder has no <scene>-A/-B images"))
    items = []
    for scene, by_letter in sorted(scenes.items()):
        letters = sorted(by_letter)
        expected = [chr(ord("A") + i) for i in range(max(2, len(letters)))]
        if letters != expected:
            lacking = ", ".join(f"{scene}-{c}.*" for c in expected if c not in by_letter)
            for c in letters:
                problems.append(Problem(by_letter[c], f"no partner: expected {lacking} in {folder}/"))
            continue
        pid = prefix + scene
        paths = tuple(by_letter[c] for c in letters)
        items.append(SourcePair(pid, "multi-focus", paths, _focus_names(len(paths)), pid))
    return items


def load_lytro(root: str | Path, *, triples: bool = False, skip_bad: bool = False) -> Sources:
    root = _root(root)
    problems: list[Problem] = []
    items = _lytro_dir(root, "", problems)
    if triples:
        items += _lytro_dir(_find_folder(root, ["triples"], "triples"), "triples/", problems)
    return _finish(root, items, problems, skip_bad, "multi-focus pairs")


def load_mffw(root: str | Path, *, skip_bad: bool = False) -> Sources:
    root = _root(root)
    found = sorted((p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"source_\d+", p.name)),
                   key=lambda p: int(p.name.split("_")[1]))
    if len(found) < 2:
        raise DataError(f"{root}: needs source_1/ and source_2/ (optionally source_3/..., full_clear/); "
                        f"found {', '.join(p.name + '/' for p in found) or 'none'}")
    gt_dir = root / "full_clear" if (root / "full_clear").is_dir() else None
    return _folder_pairs(root, found, "multi-focus", [p.name for p in found], skip_bad, gt_dir)


def _exposure_names(n: int) -> tuple[str, ...]:
    return ("under", "over") if n == 2 else ("under", *(f"mid{i}" for i in range(1, n - 1)), "over")


def _brightness(path: Path) -> float | None:
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_4) if data.size else None
    return None if img is None else float(img.mean())


def load_mef_scenes(root: str | Path, *, order: str = "brightness", skip_bad: bool = False) -> Sources:
    """Folder of scenes, each a folder of exposures. Names like chairs1..5 do not say which end is
    dark (IFCNN's igloo1 is the brightest, chairs1 the darkest), hence brightness order by default."""
    if order not in ("brightness", "name"):
        raise ConfigError(f"order: {order!r} is not one of brightness, name")
    root = _root(root)
    problems: list[Problem] = []
    items = []
    scenes = sorted(p for p in root.iterdir() if p.is_dir())
    if not scenes:
        raise DataError(f"{root}: no scene folders (expected <scene>/<exposure images>)")
    for scene in scenes:
        files = sorted(list_images(scene), key=lambda p: _natural_key(p.name))
        if len(files) < 2:
            problems.append(Problem(scene, f"needs >= 2 exposures, found {len(files)}"))
            continue
        if order == "brightness":
            means = {p: _brightness(p) for p in files}
            unreadable = [p for p, m in means.items() if m is None]
            if unreadable:
                problems += [Problem(p, "cannot decode image (corrupt, truncated or not an image)") for p in unreadable]
                continue
            files = sorted(files, key=lambda p: (means[p], _natural_key(p.name)))
        items.append(SourcePair(scene.name, "multi-exposure", tuple(files), _exposure_names(len(files)), scene.name))
    return _finish(root, items, problems, skip_bad, "exposure sequences")


def load_u2fusion_mef(root: str | Path, *, skip_bad: bool = False) -> Sources:
    root = _root(root)
    problems: list[Problem] = []
    if (root / "ue").is_dir() or (root / "oe").is_dir():
        datasets = [(root, "")]
    else:
        datasets = [(d, d.name + "/") for d in sorted(root.iterdir()) if d.is_dir()]
    items = []
    for d, prefix in datasets:
        have = [n for n in ("ue", "oe") if (d / n).is_dir()]
        if len(have) == 1:
            problems.append(Problem(d, f"has {have[0]}/ but no {'oe' if have[0] == 'ue' else 'ue'}/"))
        if len(have) != 2:
            continue
        items += _folder_pairs(root, [d / "ue", d / "oe"], "multi-exposure", ["under", "over"], skip_bad,
                               prefix=prefix, problems=problems, finish=False)
    if not items and not problems:
        raise DataError(f"{root}: no ue/ + oe/ folders (looked in {root} and its dataset*/ subfolders)")
    return _finish(root, items, problems, skip_bad, "under/over exposure pairs")


_HARVARD = re.compile(r"^(?P<other>[A-Z]+)-MRI$")
_CASE_SLICE = re.compile(r"^(?P<case>\d+)(?P<slice>\d{3})$")


def load_harvard(root: str | Path, *, subsets: Sequence[str] | None = None, skip_bad: bool = False) -> Sources:
    root = _root(root)
    if _HARVARD.match(root.name):
        available = {root.name: root}
    else:
        available = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and _HARVARD.match(p.name)}
    if not available:
        raise DataError(f"{root}: no <X>-MRI folders (looked for CT-MRI/, PET-MRI/, SPECT-MRI/)")
    chosen = sorted(available) if subsets is None else list(subsets)
    absent = [s for s in chosen if s not in available]
    if absent:
        raise DataError(f"{root}: requested subset(s) {', '.join(absent)} not found; "
                        f"available: {', '.join(sorted(available))}")
    problems: list[Problem] = []
    items = []
    for name in chosen:
        other = _HARVARD.match(name)["other"]
        folder = available[name]
        dirs = [_find_folder(folder, ["MRI"], "MRI"), _find_folder(folder, [other], other)]
        for stem, paths in _match(dirs, problems):
            m = _CASE_SLICE.match(stem)
            if not m:
                problems += [Problem(p, "name is not <case id><3-digit slice>.png") for p in paths]
                continue
            items.append(SourcePair(f"{name}/{stem}", "medical", tuple(paths), ("mri", other.lower()), m["case"]))
    return _finish(root, items, problems, skip_bad, "MRI pairs")


def load_duts(root: str | Path, *, split: str = "TR", skip_bad: bool = False) -> Sources:
    root = _root(root)
    nested = root / f"DUTS-{split}"  # the published archive unpacks to DUTS-TR/DUTS-TR-Image/
    base = nested if not (root / f"DUTS-{split}-Image").is_dir() and nested.is_dir() else root
    img_dir = _find_folder(base, [f"DUTS-{split}-Image"], "image")
    mask_dir = _find_folder(base, [f"DUTS-{split}-Mask"], "mask")
    problems: list[Problem] = []
    images, masks = _by_stem(img_dir, problems), _by_stem(mask_dir, problems)
    items = []
    if images and masks:
        for stem in sorted(set(images) | set(masks)):
            if stem not in masks:
                problems.append(Problem(images[stem], f"image has no mask {mask_dir}/{stem}.png"))
            elif stem not in images:
                problems.append(Problem(masks[stem], f"mask has no image {img_dir}/{stem}.jpg"))
            else:
                items.append(MaskedImage(stem, images[stem], masks[stem], stem))
    return _finish(root, items, problems, skip_bad, "DUTS image/mask pairs")


def load_photos(root: str | Path, *, skip_bad: bool = False) -> Sources:
    root = _root(root)
    img_dir = _find_folder(root, ["images"], "image")
    problems: list[Problem] = []
    images = _by_stem(img_dir, problems)
    masks: dict[str, Path] = {}
    if (root / "masks").is_dir():
        masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.suffix.lower() in (".png", ".npz")}
    for stem in sorted(set(masks) - set(images)):
        problems.append(Problem(masks[stem], f"mask has no image {img_dir}/{stem}.*"))
    items = [MaskedImage(stem, images[stem], masks.get(stem), stem) for stem in sorted(images)]
    return _finish(root, items, problems, skip_bad, "photographs")


LAYOUTS: dict[str, Callable[..., Sources]] = {
    "tno": load_tno,
    "roadscene": load_roadscene,
    "msrs": load_msrs,
    "kaist": load_kaist,
    "lytro": load_lytro,
    "mffw": load_mffw,
    "mef-scenes": load_mef_scenes,
    "u2fusion-mef": load_u2fusion_mef,
    "harvard": load_harvard,
    "duts": load_duts,
    "photos": load_photos,
    "folders": load_folders,
}

# None: the layout is not a fusion task (duts) or the spec must say (folders).
LAYOUT_TASKS: dict[str, str | None] = {
    "tno": "ir-vis", "roadscene": "ir-vis", "msrs": "ir-vis", "kaist": "ir-vis",
    "lytro": "multi-focus", "mffw": "multi-focus", "mef-scenes": "multi-exposure",
    "u2fusion-mef": "multi-exposure", "harvard": "medical", "duts": None, "photos": None, "folders": None,
}


# --------------------------------------------------------------------------- specs


def _str_list(v) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


_OPTION_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "skip_bad": (lambda v: isinstance(v, bool), "true or false"),
    "triples": (lambda v: isinstance(v, bool), "true or false"),
    "sets": (lambda v: isinstance(v, (list, tuple))
             and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v),
             "a list of set names like [set00, set01]"),
    "subsets": (_str_list, "a list like [CT-MRI, PET-MRI]"),
    "folders": (lambda v: _str_list(v) and len(v) >= 2, "a list of >= 2 folder names"),
    "modalities": (_str_list, "a list of names, one per folder"),
    "order": (lambda v: v in ("brightness", "name"), "brightness or name"),
    "split": (lambda v: isinstance(v, str) and bool(v), "a folder name such as train / test (msrs) or TR / TE (duts)"),
    "gt": (lambda v: isinstance(v, str) and bool(v), "a folder name"),
    "task": (lambda v: v in TASKS, " | ".join(TASKS)),
}


def _options(layout: str) -> list[str]:
    params = inspect.signature(LAYOUTS[layout]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def validate_spec(name: str, spec) -> tuple[str, str, dict]:
    """Check one `sources.<name>` entry; returns (layout, path, loader options)."""
    where = f"sources.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping like {{layout: tno, path: ...}}, got {spec!r}")
    layout = spec.get("layout")
    if layout is None:
        raise ConfigError(f"{where}.layout: missing; one of {', '.join(sorted(LAYOUTS))}")
    if layout not in LAYOUTS:
        raise ConfigError(f"{where}.layout: unknown layout {layout!r}; valid: {', '.join(sorted(LAYOUTS))}")
    path = spec.get("path")
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise ConfigError(f"{where}.path: missing or empty (the folder holding the {layout} data)")
    allowed = _options(layout)
    opts = {k: v for k, v in spec.items() if k not in ("layout", "path")}
    fixed_task = LAYOUT_TASKS[layout]
    if "task" in opts and "task" not in allowed:
        task = opts.pop("task")
        if fixed_task is None or task != fixed_task:
            gives = fixed_task or "no fusion task (synthesis input)"
            raise ConfigError(f"{where}.task: layout {layout} gives {gives}, not {task!r}")
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown option for layout {layout}; "
                          f"valid: {', '.join(['layout', 'path', 'task'] + allowed)}")
    required = [p.name for p in inspect.signature(LAYOUTS[layout]).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty]
    for key in required:
        if key not in opts:
            raise ConfigError(f"{where}.{key}: required for layout {layout}")
    for key, value in opts.items():
        check, expected = _OPTION_CHECKS[key]
        if not check(value):
            raise ConfigError(f"{where}.{key}: expected {expected}, got {value!r}")
    return layout, str(path), opts


def load_source(name_or_spec: str | Mapping, spec: Mapping | None = None, *, base: str | Path | None = None) -> Sources:
    """Load one source: `load_source(spec)`, `load_source(name, spec)` (errors name
    sources.<name>), or the shorthand `load_source("tno:/path/to/TNO42")`.
    Relative paths resolve against `base` (the folder of params.yaml) when given."""
    if isinstance(name_or_spec, Mapping):
        name, spec = "<inline>", name_or_spec
    elif spec is None:
        layout, sep, path = str(name_or_spec).partition(":")
        if not sep:
            raise ConfigError(f"source {name_or_spec!r}: give a spec {{layout, path}} or 'layout:path'")
        name, spec = layout, {"layout": layout, "path": path}
    else:
        name = str(name_or_spec)
    layout, path, opts = validate_spec(name, spec)
    root = Path(path).expanduser()
    if base is not None and not root.is_absolute():
        root = Path(base) / root
    try:
        return LAYOUTS[layout](root, **opts)
    except ConfigError as exc:  # loader option errors say "<key>: ..."; give them their params.yaml address
        raise ConfigError(f"sources.{name}.{exc}") from exc


# --------------------------------------------------------------------------- validation


class _Decoded(NamedTuple):
    shape: tuple[int, int]
    channels: int
    colourful: bool
    all_zero: bool


# First bytes of the formats a suffix promises: a file that lacks them is another kind of
# file (a text file, a link to one), not a damaged image, and is reported as such.
_SIGNATURES = {".png": (b"\x89PNG", "PNG"), ".jpg": (b"\xff\xd8", "JPEG"), ".jpeg": (b"\xff\xd8", "JPEG")}


def _decode(path: Path) -> _Decoded | str:
    """Decoded facts about one image, or the problem with it (naming a symlink's target)."""
    found = _decode_file(path)
    if isinstance(found, str) and path.is_symlink():
        return f"{found}; the file is a symlink to {path.resolve()}"
    return found


def _decode_file(path: Path) -> _Decoded | str:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    if data.size == 0:
        return "empty file"
    raw = data.tobytes()
    suffix = path.suffix.lower()
    if suffix in _SIGNATURES and not raw.startswith(_SIGNATURES[suffix][0]):
        looks = "text" if raw[:512].isascii() else "binary data"
        return f"not a {_SIGNATURES[suffix][1]} image: its content is {looks}, not {suffix} data"
    # libjpeg decodes a truncated JPEG into grey filler with only a warning: check the end markers.
    if suffix in (".jpg", ".jpeg") and raw.rstrip(b"\0")[-2:] != b"\xff\xd9":
        return "truncated JPEG (no end-of-image marker)"
    if suffix == ".png" and b"IEND" not in raw[-16:]:
        return "truncated PNG (no IEND chunk)"
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        return "cannot decode image (corrupt, truncated or not an image)"
    if img.dtype not in (np.uint8, np.uint16):
        return f"unsupported pixel type {img.dtype} (expected 8- or 16-bit)"
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 3, 4):
        return f"unsupported channel count {channels} (expected 1, 3 or 4)"
    colourful = False
    if channels >= 3:
        c = img[:, :, :3].astype(np.int32)
        colourful = float(np.abs(c[..., 0] - c[..., 1]).mean() + np.abs(c[..., 1] - c[..., 2]).mean()) > _GRAY_TOLERANCE
    return _Decoded(img.shape[:2], channels, colourful, not img.any())


def _size(d: _Decoded) -> str:
    return f"{d.shape[1]}x{d.shape[0]}"


def _roles(rec) -> list[tuple[Path, str]]:
    """(image file, role) of one record: what check_pairs decodes."""
    if isinstance(rec, MaskedImage):
        # a .npz disparity map is an array, not an image: the synthesis reads and checks it
        return [(rec.image, "image")] + ([(rec.mask, "mask")] if rec.mask and rec.mask.suffix != ".npz" else [])
    return list(zip(rec.paths, rec.modalities)) + ([(rec.gt, "gt")] if rec.gt is not None else [])


def _check_record(rec, decode: Callable[[Path], _Decoded | str]) -> list[Problem]:
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
                problems.append(Problem(path, f"size {_size(d)} ({role}) differs from its partner {ref_path} "
                                              f"({ref_role}, {_size(ref)})"))
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
    cache: dict[Path, _Decoded | str] = {}
    if workers != 1:
        from fusion.data.parallel import map_ordered

        paths = list(dict.fromkeys(path for rec in pairs for path, _ in _roles(rec)))
        cache.update(zip(paths, map_ordered(_decode, paths, workers)))

    def decode(path: Path):
        if path not in cache:
            cache[path] = _decode(path)
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


def checked(pairs: Sequence, skip_bad: bool, workers: int = 1) -> tuple[list, Report]:
    """(usable pairs, report of what was left out): every bad file raises one DataError
    unless skip_bad, which drops the pairs concerned and reports them instead."""
    if skip_bad:
        return check_pairs(pairs, skip_bad=True, workers=workers)
    check_pairs(pairs, workers=workers)
    return pairs, Report()


# --------------------------------------------------------------------------- splits


def split_by_group(pairs: Sequence, test_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Train/test split by `group` (KAIST sequence, medical case...): no group on both sides.

    round(test_fraction * groups) groups go to test, at least 1 and at most groups - 1;
    which ones depends only on the sorted group names and the seed.
    """
    if not (isinstance(test_fraction, (int, float)) and 0.0 < test_fraction < 1.0):
        raise ConfigError(f"test_fraction: must be strictly between 0 and 1, got {test_fraction!r}")
    groups = sorted({p.group for p in pairs})
    if len(groups) < 2:
        raise ConfigError(
            f"test_fraction={test_fraction}: a split by group needs >= 2 groups, but the {len(pairs)} pair(s) "
            f"have {len(groups)} ({', '.join(groups) or 'none'}); add data or evaluate on another source"
        )
    n_test = min(len(groups) - 1, max(1, round(test_fraction * len(groups))))
    order = np.random.default_rng(seed).permutation(len(groups))
    test_groups = {groups[i] for i in order[:n_test]}
    train = [p for p in pairs if p.group not in test_groups]
    test = [p for p in pairs if p.group in test_groups]
    return train, test
