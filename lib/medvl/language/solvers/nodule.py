"""Lung nodule / mass candidates from Hounsfield units, chosen by the words of the prompt.

Pipeline (numpy (k, j, i) masks, mm everywhere):

1. Solid tissue (> `solid_hu`) inside the lung field (`CTAnatomy.lung_field`: each lung
   closed with a 30 mm ball, so lesions pressed against the chest wall are inside).
2. A 2 mm in-plane opening cuts vessels and septa; 3D components are candidate regions.
3. In each region the largest inscribed ball (radius R from the exact distance transform)
   marks the lesion; an opening with a ball of R/2 detaches what is attached by thinner
   necks (hilum, chest-wall strips), and the part holding the ball is the candidate.
4. Each candidate must pass the checks a radiologist reads a nodule by (`_reject_reason`,
   first failure named in `Candidate.rejected`):
   - size: inscribed ball >= 3 mm and >= 0.7 slice thicknesses in radius (7 mm across on
     5 mm slices: thinner, a vessel crossing the plane looks the same); no upper bound
     (over `mass_mm` = 30 mm it is a mass, still a lesion);
   - not cut by the first or last slice;
   - shape: a blob (volume / inscribed-ball volume <= 8), not elongated (longest / second
     principal width <= 2.5: a vessel running across slices), not lobulated (fills >= 0.82
     of its moment ellipsoid: the hilum and vessel confluences fill less);
   - contrast: mean HU >= 300 HU above the aerated lung around it;
   - surroundings: >= 40 % of the 4 mm shell is aerated lung (less: it lies against the
     chest wall or mediastinum over most of its surface);
   - lesion score R x lung shell x (1 - outside-field shell)^2 x blobness >= `min_score`.
   Thresholds were measured on the two sample CTs (lung1, lung2; expert labels) and on
   synthetic balls inserted into their lung fields (`medvl.bench.language_nodules`):
   the expert lesions fill 0.89 / 0.94 of their ellipsoids, inserted balls 0.89-0.97, the
   lung1 right hilum that "the largest nodule" used to return 0.76 and the other hilar /
   vascular regions 0.24-0.81; elongation of the lesions and balls <= 1.5, the vessels
   rejected by it >= 2.8; lung shell 0.44 (lung2's juxtapleural mass) to 1.0 for lesions,
   0.58-0.73 for balls on the pleura; contrast 480-970 HU for every solid region.
   Result (docs/bench/language_nodules.json): on lung1 and lung2 the expert lesion is the
   only passing candidate; of 59 inserted balls every one of 10-30 mm is found at every
   location (free, on a vessel, on the pleura), 8 mm free/on a vessel yes and on the
   pleura no, <= 6 mm never (the size check); 0 false candidates in the 6 volumes.
5. The prompt's words choose among passing candidates only: side (left/right), rank
   (largest/smallest), level (upper/lower). A qualifier that matches none is not dropped:
   the answer is "not found" naming where the candidates are. The chosen candidate is
   grown back by `regrow_mm` within the solid tissue (what the opening shaved off).

`refine_with_session` turns the candidate into a box prompt on its largest slice and lets
the segmentation engine propagate; see `medvl.language.solvers.solve` for the choice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from medvl.language.solvers import morph
from medvl.language.solvers.anatomy import CTAnatomy, centroid_lps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoduleSettings:
    solid_hu: float = -300.0  # solid/part-solid lesion tissue; lung parenchyma is ~-850
    vessel_cut_mm: float = 2.0  # in-plane opening radius that separates vessels
    min_radius_mm: float = 3.0  # inscribed-ball radius: lesions >= 6 mm across ...
    min_radius_slices: float = 0.7  # ... and >= 1.4 slice thicknesses (thinner: vessel or nodule?)
    min_score: float = 1.0  # best candidate below this: "no lesion found", not a guess
    max_ratio: float = 8.0  # candidate volume / inscribed-ball volume above this: not a blob
    min_fill: float = 0.82  # volume / volume of its moment ellipsoid below this: lobulated (hilum, vessel confluence)
    max_elongation: float = 2.5  # longest / second principal axis above this: a vessel running across slices
    min_contrast_hu: float = 300.0  # mean HU of the candidate minus that of the aerated lung around it
    min_lung_shell: float = 0.4  # fraction of the 4 mm shell that is aerated lung: less, it is wall/mediastinum
    shell_mm: float = 4.0
    regrow_mm: float = 2.0  # grow the chosen candidate back within solid tissue
    max_per_region: int = 3  # candidates searched in one connected solid region (a nodule on a vessel)
    mass_mm: float = 30.0  # long axis above this: a mass, not a nodule (still a lesion)


@dataclass
class Candidate:
    """One lesion candidate; `mask` lives in the sub-box `box` of the volume (numpy slices)."""

    box: tuple[slice, slice, slice]  # numpy (k, j, i) slices of the volume
    mask: np.ndarray  # bool, shape of the box
    radius_mm: float  # largest inscribed ball
    volume_ml: float
    ratio: float  # volume / inscribed-ball volume
    lung_shell: float  # fraction of the surrounding 4 mm shell that is aerated lung (< -400 HU)
    outside_shell: float  # fraction of that shell outside the lung field (chest wall, mediastinum)
    touches_scan_end: bool  # reaches the first or last slice: cut by the scan's extent
    axes_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # principal widths (4 SD, = diameters of a solid ellipsoid), longest first
    fill: float = 1.0  # volume / volume of the ellipsoid with those axes (1: ellipsoid; lobulated < 1)
    mean_hu: float = 0.0
    contrast_hu: float = 0.0  # mean HU minus the mean HU of the aerated lung in the shell
    side: str = ""  # "left" / "right" (patient), from the LPS centroid vs the body's
    centroid_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    score: float = 0.0
    rejected: str = ""  # why it is not a lesion candidate, "" when it is

    def full_mask(self, shape) -> np.ndarray:
        out = np.zeros(shape, bool)
        out[self.box] = self.mask
        return out

    def summary(self) -> dict:
        ks = np.flatnonzero(self.mask.any(axis=(1, 2))) + self.box[0].start
        return {"side": self.side, "radius_mm": round(self.radius_mm, 1), "volume_ml": round(self.volume_ml, 2),
                "slices_k": [int(ks[0]), int(ks[-1])], "score": round(self.score, 3),
                "lung_shell": round(self.lung_shell, 2), "outside_shell": round(self.outside_shell, 2),
                "axes_mm": [round(a, 1) for a in self.axes_mm], "fill": round(self.fill, 2),
                "contrast_hu": round(self.contrast_hu), "rejected": self.rejected}

    @property
    def passed(self) -> bool:
        return not self.rejected


def find_candidates(anatomy: CTAnatomy, settings: NoduleSettings = NoduleSettings()) -> list[Candidate]:
    """Every lesion-like candidate in the lung field, best score first (rejected ones last).
    Kept in `anatomy.memo` per settings: a report and its questions search once."""
    key = ("nodule_candidates", settings)
    if key not in anatomy.memo:
        anatomy.memo[key] = _find_candidates(anatomy, settings)
    return anatomy.memo[key]


def _find_candidates(anatomy: CTAnatomy, settings: NoduleSettings) -> list[Candidate]:
    hu, sp = anatomy.hu, anatomy.spacing
    field_ = anatomy.lung_field
    solid = (hu > settings.solid_hu) & field_
    regions = morph.open_2d(solid, settings.vessel_cut_mm, sp)
    labels, _ = ndi.label(regions)
    body_x = anatomy.mid_x
    nk = hu.shape[0]
    out = []
    for n, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, dim)) for s, dim in zip(box, hu.shape))
        region = labels[box] == n
        if region.sum() * anatomy.voxel_ml < 0.05:
            continue
        for cand in _candidates_in(anatomy, box, region, field_, settings):
            _finish(anatomy, cand, box, settings, body_x, nk)
            out.append(cand)
    out.sort(key=lambda c: (c.rejected != "", -c.score))
    return out


def _candidates_in(anatomy, box, region, field_, settings):
    """Up to `max_per_region` candidates of one region: after each, the region minus the
    candidate grown by R/2 (its shaved rim) is searched again while a ball of the minimum
    radius still fits - a nodule touching a vessel or the hilum is its own candidate."""
    sp = anatomy.spacing
    min_r = max(settings.min_radius_mm, settings.min_radius_slices * sp[0])
    for n in range(settings.max_per_region):
        cand = _candidate(anatomy, box, region, field_, settings)
        if cand is None:
            return
        yield cand
        region = region & ~morph.dilate_mm(cand.mask, 0.5 * cand.radius_mm + 1.0, sp)
        if n + 1 == settings.max_per_region or not region.any() or \
                ndi.distance_transform_edt(region, sampling=sp).max() < min_r:
            return


def _finish(anatomy, cand, box, settings, body_x, nk):
    """Side, centroid, score and the checks of a candidate found in the sub-box `box`."""
    cand.touches_scan_end = box[0].start == 0 and cand.mask[0].any() or box[0].stop == nk and cand.mask[-1].any()
    c = centroid_lps(anatomy.volume, cand.mask, [b.start for b in box])
    cand.centroid_lps = tuple(float(v) for v in c)
    cand.side = "left" if c[0] > body_x else "right"
    blob = min(1.0, 2.0 / cand.ratio)
    cand.score = cand.radius_mm * cand.lung_shell * (1 - cand.outside_shell) ** 2 * blob
    cand.rejected = _reject_reason(cand, settings, anatomy.spacing[0])


def _candidate(anatomy, box, region, field_, settings) -> Candidate | None:
    sp = anatomy.spacing
    dist = ndi.distance_transform_edt(region, sampling=sp)
    radius = float(dist.max())
    if radius <= 0:
        return None
    centre = np.unravel_index(int(np.argmax(dist)), dist.shape)
    half = 0.5 * radius
    core = dist >= half
    opened = (ndi.distance_transform_edt(~core, sampling=sp) <= half) & region
    lab, _ = ndi.label(opened)
    mask = lab == lab[centre] if lab[centre] else region
    vol = float(mask.sum() * anatomy.voxel_ml)
    ball = 4.0 / 3.0 * np.pi * radius ** 3 / 1000.0
    # shell statistics on a box padded by the shell width
    pad = tuple(int(np.ceil(settings.shell_mm / s)) + 1 for s in sp)
    big = tuple(slice(max(b.start - p, 0), min(b.stop + p, dim)) for b, p, dim in zip(box, pad, field_.shape))
    inner = np.zeros(tuple(b.stop - b.start for b in big), bool)
    inner[tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, big))] = mask
    d = ndi.distance_transform_edt(~inner, sampling=sp)
    shell = (d > 0) & (d <= settings.shell_mm)
    shell_hu = anatomy.hu[big][shell]
    aerated = shell_hu < anatomy.settings.air_hu
    lung_shell = float(aerated.mean()) if shell.any() else 0.0
    outside = float((~field_[big][shell]).mean()) if shell.any() else 1.0
    mean_hu = float(anatomy.hu[box][mask].mean())
    contrast = mean_hu - float(shell_hu[aerated].mean()) if aerated.any() else 0.0
    axes, fill = shape_of(mask, sp)
    return Candidate(box=box, mask=mask, radius_mm=radius, volume_ml=vol, ratio=vol / ball,
                     lung_shell=lung_shell, outside_shell=outside, touches_scan_end=False,
                     axes_mm=axes, fill=fill, mean_hu=mean_hu, contrast_hu=contrast)


def shape_of(mask: np.ndarray, spacing_kji) -> tuple[tuple[float, float, float], float]:
    """Principal widths (mm, longest first) of a (k, j, i) mask and how much of its moment
    ellipsoid it fills. Voxels count as boxes (each axis' variance gets spacing^2 / 12), so
    a one-slice nodule on 5 mm slices is not a flat disc. For a solid ellipsoid with
    semi-axes a, the variance along each is a^2 / 5: widths are 2 sqrt(5 var)."""
    pts = np.argwhere(mask).astype(np.float64) * np.asarray(spacing_kji, float)
    cov = np.cov(pts.T) if len(pts) > 1 else np.zeros((3, 3))
    cov = cov + np.diag(np.asarray(spacing_kji, float) ** 2 / 12.0)
    var = np.clip(np.sort(np.linalg.eigvalsh(cov))[::-1], 1e-9, None)
    semi = np.sqrt(5.0 * var)
    ell_ml = 4.0 / 3.0 * np.pi * float(np.prod(semi)) / 1000.0
    vol_ml = len(pts) * float(np.prod(spacing_kji)) / 1000.0
    return tuple(float(2 * a) for a in semi), min(1.0, vol_ml / ell_ml)


def _reject_reason(c: Candidate, s: NoduleSettings, thickness_mm: float) -> str:
    min_r = max(s.min_radius_mm, s.min_radius_slices * thickness_mm)
    if c.radius_mm < min_r:
        return f"smaller than {2 * min_r:g} mm across"
    if c.touches_scan_end:
        return "cut by the first or last slice"
    if c.ratio > s.max_ratio:
        return "not blob-shaped"
    if c.axes_mm[0] > s.max_elongation * c.axes_mm[1]:
        return f"elongated ({c.axes_mm[0]:.0f} x {c.axes_mm[1]:.0f} mm): a vessel"
    if c.fill < s.min_fill:
        return f"lobulated (fills {c.fill:.2f} of its ellipsoid): hilum or vessel confluence"
    if c.contrast_hu < s.min_contrast_hu:
        return f"contrast to the lung {c.contrast_hu:.0f} HU < {s.min_contrast_hu:g}"
    if c.lung_shell < s.min_lung_shell:
        return f"touches chest wall or mediastinum over {1 - c.lung_shell:.0%} of its surface"
    if c.score < s.min_score:
        return f"lesion score {c.score:.2f} below {s.min_score:g}"
    return ""


def lung_z_range(anatomy: CTAnatomy) -> tuple[float, float] | None:
    """(lowest, highest) LPS z (mm) of the lungs' axial slices, None without lungs."""
    lungs = anatomy.lungs
    if not lungs.any():
        return None
    ks = np.flatnonzero(lungs.any(axis=(1, 2)))
    zs = [anatomy.volume.geometry.index_to_physical((0, 0, int(k)))[2] for k in (ks[0], ks[-1])]
    return (min(zs), max(zs))


def zone_of(c: Candidate, z_range: tuple[float, float]) -> str:
    """"lower", "middle" or "upper" third of the lungs' cranio-caudal extent."""
    lo, hi = z_range
    third = (hi - lo) / 3.0 or 1.0
    return ("lower", "middle", "upper")[min(2, max(0, int((c.centroid_lps[2] - lo) // third)))]


def _where(c: Candidate, z_range) -> str:
    return f"{c.side} lung ({zone_of(c, z_range)} zone)" if z_range else f"{c.side} lung"


def choose(cands: list[Candidate], side: str | None = None, rank: str | None = None,
           level: str | None = None, z_range: tuple[float, float] | None = None) -> tuple[Candidate | None, str]:
    """Pick one passing candidate by the prompt's qualifiers; returns (candidate or None, why).

    Qualifiers only ever choose among candidates that passed every check. A qualifier that
    matches none is not dropped: the answer is None and `why` says what there is instead
    ("no nodule in the left lung: 1 candidate, in the right lung")."""
    pool = [c for c in cands if c.passed]
    if not pool:
        return None, "no lesion candidate passed the checks"
    why = []
    if side in ("left", "right"):
        matched = [c for c in pool if c.side == side]
        if not matched:
            return None, (f"no nodule in the {side} lung: {len(pool)} candidate{'s' if len(pool) > 1 else ''}, "
                          f"in the {' and '.join(sorted({_where(c, z_range) for c in pool}))}")
        pool = matched
        why.append(f"{side} side")
    if level in ("upper", "lower", "middle") and z_range is not None:
        matched = [c for c in pool if zone_of(c, z_range) == level]
        if not matched:
            return None, (f"no nodule in the {level} zone{f' of the {side} lung' if side in ('left', 'right') else ''}"
                          f": {len(pool)} candidate{'s' if len(pool) > 1 else ''}, in the "
                          f"{' and '.join(sorted({_where(c, z_range) for c in pool}))}")
        pool = matched
        why.append(f"{level} zone")
    if rank == "largest":
        best = max(pool, key=lambda c: c.volume_ml)
        why.append(f"largest of {len(pool)}")
    elif rank == "smallest":
        best = min(pool, key=lambda c: c.volume_ml)
        why.append(f"smallest of {len(pool)}")
    else:
        best = pool[0]
        why.append("most lesion-like")
    return best, ", ".join(why)


def solve_nodule(anatomy: CTAnatomy, grounding, session, settings):
    """The nodule concept's solver (registered in `medvl.language.solvers.SOLVERS`):
    candidates -> the one the qualifiers pick -> regrown HU mask -> optional engine refinement
    (`settings.refine`, see `medvl.language.solvers`). Raises SolverError naming what was
    found instead when nothing passes or a qualifier matches none."""
    from medvl.language.errors import SolverError
    from medvl.language.solvers import refine_if_agrees

    t0 = time.perf_counter()
    cands = find_candidates(anatomy, settings.nodule)
    t_cand = time.perf_counter() - t0
    q = grounding.qualifiers
    z_range = lung_z_range(anatomy)
    chosen, why = choose(cands, q.side, q.rank, q.level, z_range)
    passing = [c for c in cands if c.passed]
    info = {"candidates": [c.summary() for c in passing] + [c.summary() for c in cands if not c.passed][:6],
            "passing_candidates": len(passing), "seconds_candidates": round(t_cand, 3)}
    if chosen is None:
        raise SolverError(f"{why} ({anatomy.volume.name or 'this volume'}; {len(cands)} regions checked)")
    hu_mask = regrow(anatomy, chosen, settings.nodule)
    info.update(chosen=passing.index(chosen), why=why, side=chosen.side, method="hu")
    if settings.refine == "hu" or session is None:
        return hu_mask, info
    mask, more = refine_if_agrees(anatomy.volume, session, hu_mask, settings, "hu", "engine_hu_dice")
    info.update(more)
    return mask, info


def regrow(anatomy: CTAnatomy, cand: Candidate, settings: NoduleSettings = NoduleSettings()) -> np.ndarray:
    """The candidate grown back by `regrow_mm` within solid lung-field tissue: full (k, j, i) mask."""
    full = cand.full_mask(anatomy.hu.shape)
    pad = tuple(int(np.ceil(settings.regrow_mm / s)) + 1 for s in anatomy.spacing)
    big = morph.bbox_slices(full, pad)
    solid = (anatomy.hu[big] > settings.solid_hu) & anatomy.lung_field[big]
    grown = morph.dilate_mm(full[big], settings.regrow_mm, anatomy.spacing) & solid
    lab, _ = ndi.label(grown)
    ids = np.unique(lab[full[big]])
    out = np.zeros_like(full)
    out[big] = np.isin(lab, ids[ids > 0])
    return out
