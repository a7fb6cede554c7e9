"""Training losses. Pure torch; images in [0, 1] (losses rescale internally where the paper does)."""

from __future__ import annotations

import kornia
import torch
import torch.nn as nn
import torch.nn.functional as F


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Mean SSIM with an 11x11 Gaussian window (sigma 1.5), data range 1 (kornia's definition)."""
    return kornia.metrics.ssim(pred, target, window_size=window, max_val=1.0).mean()


def ssim_zero_padded(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM as UFA-Fuse's released training code computes it (the widespread `pytorch_ssim`):
    the Gaussian window runs over zero padding at the border, where kornia reflects."""
    ch = pred.shape[1]
    k = _gaussian(window, sigma, pred).expand(ch, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, padding=window // 2, groups=ch)

    mx, my = blur(pred), blur(target)
    sxx, syy, sxy = blur(pred * pred) - mx**2, blur(target * target) - my**2, blur(pred * target) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean()


class L1SSIMLoss(nn.Module):
    """UFA-Fuse Eq. 1: lambda * L1 + (1 - lambda) * (1 - SSIM), against the ground truth."""

    def __init__(self, lambda_l1: float = 0.2, released: bool = False):
        super().__init__()
        if not 0.0 <= lambda_l1 <= 1.0:
            raise ValueError(f"lambda_l1 must be in [0, 1], got {lambda_l1}")
        self.lambda_l1 = lambda_l1
        self.ssim = ssim_zero_padded if released else ssim

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        l1 = (pred - target).abs().mean()
        ssim_term = 1.0 - self.ssim(pred, target)
        total = self.lambda_l1 * l1 + (1.0 - self.lambda_l1) * ssim_term
        return {"loss": total, "l1": l1.detach(), "ssim_loss": ssim_term.detach()}


# ---------------------------------------------------------------- shared operators

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """4-neighbour 3x3 Laplacian per channel, zero 'same' padding (TensorFlow's SAME)."""
    k = _LAPLACIAN.to(x).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(x, k, padding=1, groups=x.shape[1])


def local_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """size x size box mean, zero-padded (the released CrossFuse code's mean filter)."""
    return F.avg_pool2d(x, size, stride=1, padding=size // 2, count_include_pad=True)


def _gaussian(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    ax = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003): 5 dyadic scales, 11x11 Gaussian (sigma 1.5), valid windows.

    MS-SSIM = l_M^w_M * prod_j cs_j^w_j, each factor averaged over the image and the batch.
    kornia's MS_SSIMLoss is a different quantity (several Gaussians at full resolution, plus an
    L1 term), hence this implementation. The window shrinks to the image at coarse scales of
    small inputs. Negative factors are clipped at a small epsilon so that the powers stay real.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ch = x.shape[1]
    factors = []
    for level, w in enumerate(weights):
        size = min(window, x.shape[-2], x.shape[-1])
        k = _gaussian(size, sigma, x).expand(ch, 1, size, size)

        def blur(t: torch.Tensor, k: torch.Tensor = k) -> torch.Tensor:  # this scale's window
            return F.conv2d(t, k, groups=ch)

        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if level == len(weights) - 1:
            value = ((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs).mean()
        else:
            value = cs.mean()
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        factors.append(value.clamp_min(1e-6) ** w)
    return torch.stack(factors).prod()


# ---------------------------------------------------------------- CADNIF

# Eq. 7 weights (lambda_mse_i, lambda_mse_j, lambda_grad_i, lambda_grad_j), source i first:
# IR-VIS (ir, vi), medical (MRI, PET: intensity from PET, texture from MRI), multi-focus,
# multi-exposure.
CADNIF_TASK_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "ir-vis": (1.0, 1.0, 4.0, 4.0),
    "medical": (0.0, 1.0, 1.0, 0.0),
    "multi-focus": (0.0005, 0.0005, 1.0, 1.0),
    "multi-exposure": (1.0, 1.0, 4.0, 4.0),
}
CADNIF_RELEASED_WEIGHTS = (1.0, 1.0, 3.0, 3.0)
CADNIF_RELEASED_SCALE = 100.0
CADNIF_CROP_BORDER, CADNIF_RELEASED_CROP_BORDER = 6, 0
_TASK_ALIASES = {
    "irvis": "ir-vis",
    "infraredvisible": "ir-vis",
    "ivf": "ir-vis",
    "medical": "medical",
    "mripet": "medical",
    "multifocus": "multi-focus",
    "mff": "multi-focus",
    "multiexposure": "multi-exposure",
    "mef": "multi-exposure",
}


def canonical_task(task: str) -> str:
    key = "".join(ch for ch in task.lower() if ch.isalnum())
    if key not in _TASK_ALIASES:
        raise ValueError(f"unknown fusion task {task!r}; valid: {list(CADNIF_TASK_WEIGHTS)}")
    return _TASK_ALIASES[key]


class CADNIFLoss(nn.Module):
    """CADNIF Eq. 7: sum_k lambda_mse_k MSE(F, I_k) + lambda_grad_k MSE(lap F, lap I_k).

    Eq. 5 prints ||grad F - I||; the gradient of both sides is meant (and is what the released
    graph computes). Images are compared on the network's [-1, 1] scale, with the Laplacian
    taken on the whole window and the MSE on the centre (`crop_border` pixels dropped on every
    side; the paper default 6 scores 132x132 windows on their central 120x120, a project choice).
    `released=True`: 100 x [MSE(F, I_i) + MSE(F, I_j) + 3 MSE(lap F, lap I_j) + 3 MSE(lap F, lap I_i)]
    whatever the task, on the whole window (crop_border 0): the trained graph is fed the central
    120x120 of each 132x132 window and scores all of it (train.crop 120). More than two sources
    (multi-exposure) need symmetric weights, which then apply to every source.
    """

    def __init__(
        self,
        task: str = "ir-vis",
        released: bool = False,
        crop_border: int | None = None,
        weights: tuple[float, float, float, float] | None = None,
        scale: float | None = None,
    ):
        super().__init__()
        self.task = canonical_task(task)
        if crop_border is None:
            crop_border = CADNIF_RELEASED_CROP_BORDER if released else CADNIF_CROP_BORDER
        if weights is None:
            weights = CADNIF_RELEASED_WEIGHTS if released else CADNIF_TASK_WEIGHTS[self.task]
        if scale is None:
            scale = CADNIF_RELEASED_SCALE if released else 1.0
        if crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.weights = tuple(float(w) for w in weights)
        self.scale = float(scale)
        self.crop_border = crop_border

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        b = self.crop_border
        if b == 0:
            return x
        if x.shape[-2] <= 2 * b or x.shape[-1] <= 2 * b:
            raise ValueError(f"image {tuple(x.shape[-2:])} too small for crop_border={b}")
        return x[..., b:-b, b:-b]

    def forward(self, fused: torch.Tensor, *sources: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(sources) < 2:
            raise ValueError(f"CADNIFLoss needs at least 2 sources, got {len(sources)}")
        wm_i, wm_j, wg_i, wg_j = self.weights
        if len(sources) == 2:
            lam = [(wm_i, wg_i), (wm_j, wg_j)]
        elif wm_i == wm_j and wg_i == wg_j:
            lam = [(wm_i, wg_i)] * len(sources)
        else:
            raise ValueError(f"task {self.task!r} weights sources asymmetrically; it needs exactly 2 sources")
        f = fused * 2 - 1
        lap_f = self._crop(laplacian(f))
        f = self._crop(f)
        mse = fused.new_zeros(())
        grad = fused.new_zeros(())
        for (wm, wg), src in zip(lam, sources):
            s = src * 2 - 1
            mse = mse + wm * F.mse_loss(f, self._crop(s))
            grad = grad + wg * F.mse_loss(lap_f, self._crop(laplacian(s)))
        total = self.scale * (mse + grad)
        return {"loss": total, "mse": mse.detach(), "grad": grad.detach()}


# ---------------------------------------------------------------- CrossFuse


def released_ms_ssim_combine(
    ssim: torch.Tensor, cs: torch.Tensor, weights: tuple[float, ...] = MS_SSIM_WEIGHTS
) -> torch.Tensor:
    """How `pytorch_msssim.msssim(..., normalize=True)` combines per-scale values:
    prod(((cs[:-1] + 1) / 2) ** w[:-1] * ((ssim[-1] + 1) / 2) ** w[-1]). The last scale's factor
    sits inside the product over the other scales, so it is raised to (levels - 1) * w[-1]
    (4 x 0.1333 with 5 scales), and the last scale's cs is never used."""
    w = torch.tensor(weights, dtype=ssim.dtype, device=ssim.device)
    ssim, cs = (ssim + 1) / 2, (cs + 1) / 2
    return torch.prod(cs[:-1] ** w[:-1] * ssim[-1] ** w[-1])


def released_ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    pixel_scale: float = 255.0,
) -> torch.Tensor:
    """CrossFuse's released stage-1 MS-SSIM: `pytorch_msssim.msssim(x * 255, y * 255, normalize=True)`.

    As that code does at every scale: the data range L is guessed from x (255 if max(x) > 128 on
    the 0..255 scale, else 1; minus -1 if min(x) < -0.5), the Gaussian window is centred on
    pixel size // 2 of a window shrunk to the image, valid windows; see released_ms_ssim_combine.
    """
    x, y = x * pixel_scale, y * pixel_scale
    ch = x.shape[1]
    ssims, css = [], []
    for level in range(len(weights)):
        hi = 255.0 if x.max() > 128 else 1.0
        lo = -1.0 if x.min() < -0.5 else 0.0
        c1, c2 = (0.01 * (hi - lo)) ** 2, (0.03 * (hi - lo)) ** 2
        size = min(window, x.shape[-2], x.shape[-1])
        ax = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
        g = torch.exp(-(ax**2) / (2 * sigma**2))
        g = g / g.sum()
        k = torch.outer(g, g).expand(ch, 1, size, size)

        def blur(t: torch.Tensor, k: torch.Tensor = k) -> torch.Tensor:  # this scale's window
            return F.conv2d(t, k, groups=ch)

        mx, my = blur(x), blur(y)
        v1 = 2 * (blur(x * y) - mx * my) + c2
        v2 = (blur(x * x) - mx**2) + (blur(y * y) - my**2) + c2
        css.append((v1 / v2).mean())
        ssims.append(((2 * mx * my + c1) * v1 / ((mx**2 + my**2 + c1) * v2)).mean())
        if level + 1 < len(weights):
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return released_ms_ssim_combine(torch.stack(ssims), torch.stack(css), weights)


class CrossFuseAELoss(nn.Module):
    """CrossFuse Eq. 7 (stage 1): MSE + w_s (1 - MS-SSIM), w_s = 1e4.

    The MSE is taken on the 0..255 scale, as in the released code (on [0, 1] it would vanish
    next to 1e4 x the structural term); MS-SSIM does not depend on the scale. `released=True`:
    the released MS-SSIM (released_ms_ssim), not the standard one.
    """

    def __init__(self, w_ssim: float = 1e4, pixel_scale: float = 255.0, released: bool = False):
        super().__init__()
        self.w_ssim = w_ssim
        self.pixel_scale = pixel_scale
        self.released = released

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        mse = F.mse_loss(recon * self.pixel_scale, target * self.pixel_scale)
        if self.released:
            ssim_term = 1.0 - released_ms_ssim(recon, target, pixel_scale=self.pixel_scale)
        else:
            ssim_term = 1.0 - ms_ssim(recon, target)
        total = mse + self.w_ssim * ssim_term
        return {"loss": total, "mse": mse.detach(), "ms_ssim_loss": ssim_term.detach()}


class CrossFuseLoss(nn.Module):
    """CrossFuse Eqs. 8-12 (stage 2): L_int + w_g L_gra, w_g = 10, on the 0..255 scale.

    L_int = MSE(F, M_ir I_ir + M_vi I_vi), M_ir = 1 where the 11x11 local mean of I_ir >= that
    of I_vi (Eqs. 10-11; normalising by the sum does not change the comparison).
    L_gra = MSE(lap F, max(ReLU(lap I_ir), ReLU(lap I_vi))) (Eq. 12). The paper prints F for
    lap F and calls the operator a 3x3 mean filter; the gradient operator of the released code,
    the 3x3 Laplacian, is used. Eq. 12 clips only the sources; `released=True` clips lap F too
    and breaks ties in the intensity mask towards VIS, as the released code does.
    """

    def __init__(self, w_grad: float = 10.0, window: int = 11, pixel_scale: float = 255.0, released: bool = False):
        super().__init__()
        self.w_grad = w_grad
        self.window = window
        self.pixel_scale = pixel_scale
        self.released = released

    def intensity_target(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        m_ir, m_vi = local_mean(ir, self.window), local_mean(vi, self.window)
        mask = m_ir > m_vi if self.released else m_ir >= m_vi
        return torch.where(mask, ir, vi)

    def gradient_target(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        return torch.maximum(F.relu(laplacian(ir)), F.relu(laplacian(vi)))

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.pixel_scale
        intensity = F.mse_loss(fused * s, self.intensity_target(ir, vi) * s)
        lap_f = laplacian(fused)
        if self.released:
            lap_f = F.relu(lap_f)
        gradient = F.mse_loss(lap_f * s, self.gradient_target(ir, vi) * s)
        total = intensity + self.w_grad * gradient
        return {"loss": total, "intensity": intensity.detach(), "gradient": gradient.detach()}
