"""Image, shape and codebook metrics. Images are float arrays in [0, 1] or uint8, HxWxC."""
from __future__ import annotations

import numpy as np


def _as_float(img) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


def _masked_mean(d: np.ndarray, mask) -> float:
    """Mean of a per-pixel error map, optionally over a (H,W) or full-shape boolean mask."""
    if mask is None:
        return float(d.mean())
    m = np.asarray(mask, bool)
    m = np.broadcast_to(m[..., None] if m.ndim == d.ndim - 1 else m, d.shape)
    return float(d[m].mean()) if m.any() else 0.0


def mse(a, b, mask=None) -> float:
    return _masked_mean((_as_float(a) - _as_float(b)) ** 2, mask)


def l1(a, b, mask=None) -> float:
    return _masked_mean(np.abs(_as_float(a) - _as_float(b)), mask)


def psnr(a, b, mask=None) -> float:
    m = mse(a, b, mask)
    return float("inf") if m == 0 else float(10 * np.log10(1.0 / m))


def ssim(a, b) -> float:
    """Structural similarity (skimage), over colour channels when present."""
    from skimage.metrics import structural_similarity
    a, b = _as_float(a), _as_float(b)
    if a.ndim == 3:
        return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1))
    return float(structural_similarity(a, b, data_range=1.0))


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour (L2) distance between two point sets."""
    from scipy.spatial import cKDTree
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return float(da.mean() + db.mean()) / 2


def f_score(a: np.ndarray, b: np.ndarray, threshold: float = 0.02) -> float:
    from scipy.spatial import cKDTree
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    precision, recall = (da < threshold).mean(), (db < threshold).mean()
    return float(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))


def normal_consistency(points_a: np.ndarray, normals_a: np.ndarray, points_b: np.ndarray, normals_b: np.ndarray,
                       oriented: bool = False) -> float:
    """Mean |cos| between each point's normal and that of its nearest point in the other set, averaged
    both ways (Occupancy Networks' normal consistency; 1 = identical). `oriented=True` keeps the sign,
    so flipped faces count against a mesh."""
    from scipy.spatial import cKDTree

    def one_way(p, n, q, m):
        _, index = cKDTree(q).query(p)
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        m = m[index] / np.maximum(np.linalg.norm(m[index], axis=1, keepdims=True), 1e-12)
        cos = np.einsum("ij,ij->i", n, m)
        return float((cos if oriented else np.abs(cos)).mean())

    a, b = np.asarray(points_a, float), np.asarray(points_b, float)
    return (one_way(a, np.asarray(normals_a, float), b, np.asarray(normals_b, float))
            + one_way(b, np.asarray(normals_b, float), a, np.asarray(normals_a, float))) / 2


# ---- Distribution metrics in a feature space (FID-style) ----

def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D): FID when the
    features are Inception's; name the feature extractor when reporting it."""
    from scipy import linalg
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as the reference FID code does
        eps = np.eye(a.shape[1]) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def _knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    import torch
    f = torch.as_tensor(features, dtype=torch.float32)
    d = torch.cdist(f, f)
    return d.kthvalue(k + 1, dim=1).values.numpy()  # +1: the point itself is at distance 0


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision = share of generated
    samples inside the real manifold (union of k-NN balls of real features), recall = share of
    real samples inside the generated manifold."""
    import torch
    r, f = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)
    radii_r, radii_f = torch.as_tensor(_knn_radii(real, k)), torch.as_tensor(_knn_radii(fake, k))
    d = torch.cdist(f, r)  # (fake, real)
    precision = (d <= radii_r[None]).any(1).float().mean()
    recall = (d.T <= radii_f[None]).any(1).float().mean()
    return float(precision), float(recall)
