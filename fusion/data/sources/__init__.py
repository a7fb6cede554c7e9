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

Adding a layout is one reader in one place: a function `read(root, *, <options>...,
skip_bad=False) -> Sources` decorated with `@layout(name, task=..., options={...})`
(registry.py; the option checks are in options.py), in the module of its family, which
this file imports so that it registers. The modules:

  records.py   SourcePair, MaskedImage, Problem, Report, Sources (what readers return)
  listing.py   the readers' shared listing helpers (match by stem, finish a listing)
  registry.py  the layout registry and its @layout decorator; LAYOUTS, LAYOUT_TASKS
  options.py   the options a layout may take, each with its check
  irvis.py, multifocus.py, exposure.py, medical.py, synthesis.py, generic.py: the readers
  spec.py      validate_spec and load_source (a `sources:` entry of params.yaml)
  decode.py    sniffing and decoding one image file; check.py: check_pairs, checked
  splits.py    split_by_group
"""

from fusion.data.sources.check import GRAY_MODALITIES, check_pairs, checked
from fusion.data.sources.exposure import load_mef_scenes, load_u2fusion_mef
from fusion.data.sources.generic import load_folders
from fusion.data.sources.irvis import load_kaist, load_msrs, load_roadscene, load_tno
from fusion.data.sources.medical import load_harvard
from fusion.data.sources.multifocus import load_lytro, load_mffw
from fusion.data.sources.options import Option, required
from fusion.data.sources.records import TASKS, MaskedImage, Problem, Report, SourcePair, Sources
from fusion.data.sources.registry import LAYOUT_REGISTRY, LAYOUT_TASKS, LAYOUTS, Layout, layout
from fusion.data.sources.spec import load_source, validate_spec
from fusion.data.sources.splits import split_by_group
from fusion.data.sources.synthesis import load_duts, load_photos

__all__ = [
    "GRAY_MODALITIES",
    "LAYOUTS",
    "LAYOUT_REGISTRY",
    "LAYOUT_TASKS",
    "TASKS",
    "Layout",
    "MaskedImage",
    "Option",
    "Problem",
    "Report",
    "SourcePair",
    "Sources",
    "check_pairs",
    "checked",
    "layout",
    "load_duts",
    "load_folders",
    "load_harvard",
    "load_kaist",
    "load_lytro",
    "load_mef_scenes",
    "load_mffw",
    "load_msrs",
    "load_photos",
    "load_roadscene",
    "load_source",
    "load_tno",
    "load_u2fusion_mef",
    "required",
    "split_by_group",
    "validate_spec",
]
