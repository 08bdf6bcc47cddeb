"""Fused CPU kernels of the numba backend: EWA projection and front-to-back compositing, each
with a hand-written backward. Plain numpy arrays in and out; ``numba_backend`` wraps them in
autograd Functions.

Why hand-written: the torch backend spends most of its time in op launches (~800 small aten ops
per forward+backward) and memory-bound passes over pair arrays, while the arithmetic is only a
few hundred flops per (Gaussian, pixel) pair. One compiled loop per stage removes both. numba
ships wheels (no compiler at install or run time) and caches the machine code (``cache=True``).

Semantics are gsplat's, stated literally by ``reflect.render.reference``: per pixel, Gaussians
front to back; a pair with sigma < 0 or alpha = min(0.999, o·exp(-sigma)) < 1/255 is skipped;
the pixel stops before the Gaussian whose next transmittance would be <= 1e-4. Every quantity
is computed in float64 and returned in float64; the caller casts.

Compositing runs in row bands, in parallel (numba's ``prange``) when torch has several threads, and
through serial compilations of the same loops when it has one (see the end of this file for why).

The compositing backward walks the stored pairs in reverse and carries, per pixel, the
normalised light behind the current pair, ``B <- alpha·gw + (1 - alpha)·B`` (started at dL/dT_final),
so ``dL/dalpha = T·(gw - B)`` needs no division by 1 - alpha and never reconstructs T from
T_final (which loses all precision when alpha is near 0.999).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# gsplat's constants, from the modules that define them for every backend (numba freezes them at compile time)
from .projection import ALPHA_THRESHOLD, RADIUS_EXTEND
from .torch_backend import MAX_ALPHA, T_STOP

# LLVM may reorder sums and fuse multiply-adds (vectorises the feature loops); no "finite-math"
# flags, so NaN and inf keep their meaning in the comparisons.
FAST = {"reassoc", "contract", "nsz", "arcp"}


# --- projection ----------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _rotmat(w, x, y, z):  # noqa: ANN001, ANN202 - numba scalars
    """Rotation matrix entries (row-major) of a unit wxyz quaternion."""
    return (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )


@njit(cache=True, inline="always")
def _intrinsics(Ks, c, width, height):  # noqa: ANN001, ANN202
    """fx, fy, cx, cy of camera c and the Jacobian's clamp limits on x/z and y/z (gsplat: 30% beyond the image)."""
    fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    return (fx, fy, cx, cy, (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx,
            (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy)


@njit(cache=True, inline="always")
def _to_camera(viewmats, c, means, n):  # noqa: ANN001, ANN202
    """Mean n in camera c's frame: viewmat[c] · [mean, 1]."""
    x, y, z = means[n, 0], means[n, 1], means[n, 2]
    v = viewmats[c]
    return (v[0, 0] * x + v[0, 1] * y + v[0, 2] * z + v[0, 3], v[1, 0] * x + v[1, 1] * y + v[1, 2] * z + v[1, 3],
            v[2, 0] * x + v[2, 1] * y + v[2, 2] * z + v[2, 3])


@njit(cache=True)
def project_forward(means, quats, scales, opacities, viewmats, Ks, width, height,  # noqa: ANN001, ANN201
                    near, far, eps2d, radius_clip, antialiased):
    """EWA projection of N Gaussians into C pinhole cameras (gsplat 1.5.3's kernel).

    Args: means [N,3], quats [N,4] wxyz (any norm), scales [N,3], opacities [N], viewmats [C,4,4]
    world-to-camera, Ks [C,3,3]; image size; near/far planes; eps2d blur; radius_clip; antialiased.
    Returns: means2d [C,N,2], conics [C,N,3], depths [C,N], radii [C,N,2] int32, opacities [C,N]
    (with the antialiasing compensation), valid [C,N] bool. Same rules as ``projection.project_gaussians``.
    """
    C, N = viewmats.shape[0], means.shape[0]
    means2d = np.zeros((C, N, 2))
    conics = np.zeros((C, N, 3))
    depths = np.zeros((C, N))
    radii = np.zeros((C, N, 2), dtype=np.int32)
    opac_out = np.zeros((C, N))
    valid = np.zeros((C, N), dtype=np.bool_)
    for c in range(C):
        fx, fy, cx, cy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg = _intrinsics(Ks, c, width, height)
        for n in range(N):
            px, py, pz = _to_camera(viewmats, c, means, n)
            depths[c, n] = pz
            in_range = near < pz < far
            z = pz if in_range else 1.0
            rz = 1.0 / z
            tx = z * min(lim_x_pos, max(-lim_x_neg, px * rz))
            ty = z * min(lim_y_pos, max(-lim_y_neg, py * rz))
            qn = math.sqrt(quats[n, 0] ** 2 + quats[n, 1] ** 2 + quats[n, 2] ** 2 + quats[n, 3] ** 2)
            R = _rotmat(quats[n, 0] / qn, quats[n, 1] / qn, quats[n, 2] / qn, quats[n, 3] / qn)
            a = 0.0
            b = 0.0
            cc = 0.0
            for j in range(3):  # u0[j] = (J R_view)_0 · M[:, j], M = R_q diag(s)
                u0 = 0.0
                u1 = 0.0
                for i in range(3):
                    jr0 = fx * rz * viewmats[c, 0, i] - fx * tx * rz * rz * viewmats[c, 2, i]
                    jr1 = fy * rz * viewmats[c, 1, i] - fy * ty * rz * rz * viewmats[c, 2, i]
                    m = R[3 * i + j] * scales[n, j]
                    u0 += jr0 * m
                    u1 += jr1 * m
                a += u0 * u0
                b += u0 * u1
                cc += u1 * u1
            det_orig = a * cc - b * b
            a += eps2d
            cc += eps2d
            det = a * cc - b * b
            ok_det = det > 0
            det_safe = det if ok_det else 1.0
            conics[c, n, 0] = cc / det_safe
            conics[c, n, 1] = -b / det_safe
            conics[c, n, 2] = a / det_safe
            mx = fx * px * rz + cx
            my = fy * py * rz + cy
            means2d[c, n, 0] = mx
            means2d[c, n, 1] = my
            op = opacities[n]
            if antialiased:
                op *= math.sqrt(max(det_orig / det_safe, 0.0))
            opac_out[c, n] = op
            extend = min(RADIUS_EXTEND, math.sqrt(2.0 * math.log(max(op, ALPHA_THRESHOLD) * 255.0)))
            rx = math.ceil(extend * math.sqrt(max(a, 0.0)))
            ry = math.ceil(extend * math.sqrt(max(cc, 0.0)))
            ok = (in_range and ok_det and op >= ALPHA_THRESHOLD and not (rx <= radius_clip and ry <= radius_clip)
                  and mx + rx > 0 and mx - rx < width and my + ry > 0 and my - ry < height)
            valid[c, n] = ok
            if ok:
                radii[c, n, 0] = int(rx)
                radii[c, n, 1] = int(ry)
    return means2d, conics, depths, radii, opac_out, valid


@njit(cache=True)
def project_backward(means, quats, scales, opacities, viewmats, Ks, width, height,  # noqa: ANN001, ANN201
                     near, far, eps2d, antialiased, g_means2d, g_conics, g_depths, g_opac):
    """Chain rule of ``project_forward`` (recomputing its intermediates), summed over cameras.

    Args: the forward's inputs, then dL/d(means2d [C,N,2], conics [C,N,3], depths [C,N], opacities [C,N]).
    Returns: dL/d(means [N,3], quats [N,4], scales [N,3], opacities [N]). Entries outside the depth
    range or with a degenerate 2D covariance get the same gradients as autograd through the torch
    projection gives (its ``torch.where`` replacements are constants).
    """
    C, N = viewmats.shape[0], means.shape[0]
    g_means = np.zeros((N, 3))
    g_quats = np.zeros((N, 4))
    g_scales = np.zeros((N, 3))
    g_op_in = np.zeros(N)
    jr0 = np.zeros(3)
    jr1 = np.zeros(3)
    M = np.zeros((3, 3))
    u0 = np.zeros(3)
    u1 = np.zeros(3)
    g_M = np.zeros((3, 3))
    G = np.zeros(9)
    for c in range(C):
        fx, fy, cx, cy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg = _intrinsics(Ks, c, width, height)
        for n in range(N):
            # --- forward, again ---
            px, py, pz = _to_camera(viewmats, c, means, n)
            in_range = near < pz < far
            z = pz if in_range else 1.0
            rz = 1.0 / z
            xr, yr = px * rz, py * rz
            x_inside = -lim_x_neg < xr < lim_x_pos
            y_inside = -lim_y_neg < yr < lim_y_pos
            tx = z * min(lim_x_pos, max(-lim_x_neg, xr))
            ty = z * min(lim_y_pos, max(-lim_y_neg, yr))
            qn = math.sqrt(quats[n, 0] ** 2 + quats[n, 1] ** 2 + quats[n, 2] ** 2 + quats[n, 3] ** 2)
            qw, qx, qy, qz = quats[n, 0] / qn, quats[n, 1] / qn, quats[n, 2] / qn, quats[n, 3] / qn
            R = _rotmat(qw, qx, qy, qz)
            for i in range(3):
                jr0[i] = fx * rz * viewmats[c, 0, i] - fx * tx * rz * rz * viewmats[c, 2, i]
                jr1[i] = fy * rz * viewmats[c, 1, i] - fy * ty * rz * rz * viewmats[c, 2, i]
                for j in range(3):
                    M[i, j] = R[3 * i + j] * scales[n, j]
            a = 0.0
            b = 0.0
            cc = 0.0
            for j in range(3):
                u0[j] = jr0[0] * M[0, j] + jr0[1] * M[1, j] + jr0[2] * M[2, j]
                u1[j] = jr1[0] * M[0, j] + jr1[1] * M[1, j] + jr1[2] * M[2, j]
                a += u0[j] * u0[j]
                b += u0[j] * u1[j]
                cc += u1[j] * u1[j]
            det_orig = a * cc - b * b
            ae, ce = a + eps2d, cc + eps2d
            det = ae * ce - b * b
            ok_det = det > 0
            det_safe = det if ok_det else 1.0
            # --- conics = (ce, -b, ae) / det_safe ---
            g0, g1, g2 = g_conics[c, n, 0], g_conics[c, n, 1], g_conics[c, n, 2]
            inv = 1.0 / det_safe
            g_ae = g2 * inv
            g_ce = g0 * inv
            g_b = -g1 * inv
            if ok_det:
                g_det = -inv * inv * (g0 * ce - g1 * b + g2 * ae)
                g_ae += g_det * ce
                g_ce += g_det * ae
                g_b -= g_det * 2.0 * b
            # --- opacity (times sqrt(det_orig / det_safe) when antialiased) ---
            g_op = g_opac[c, n]
            if antialiased:
                ratio = det_orig / det_safe
                if ratio > 0:
                    root = math.sqrt(ratio)
                    g_op_in[n] += g_op * root
                    g_ratio = g_op * opacities[n] * 0.5 / root
                    # d det_orig = (cc, ae - eps... ) w.r.t. (a, b, cc); det_safe as above
                    g_a_extra = g_ratio * cc * inv
                    g_c_extra = g_ratio * a * inv
                    g_b_extra = -g_ratio * 2.0 * b * inv
                    if ok_det:
                        g_dets = -g_ratio * det_orig * inv * inv
                        g_a_extra += g_dets * ce
                        g_c_extra += g_dets * ae
                        g_b_extra -= g_dets * 2.0 * b
                    g_ae += g_a_extra
                    g_ce += g_c_extra
                    g_b += g_b_extra
            else:
                g_op_in[n] += g_op
            # --- (a, b, c) = (u0·u0, u0·u1, u1·u1) -> u0, u1 -> jr0, jr1, M ---
            g_rz = 0.0
            g_tx = 0.0
            g_ty = 0.0
            g_jr0_r2 = 0.0
            g_jr1_r2 = 0.0
            for i in range(3):
                g_jr0 = 0.0
                g_jr1 = 0.0
                for j in range(3):
                    gu0 = 2.0 * g_ae * u0[j] + g_b * u1[j]
                    gu1 = 2.0 * g_ce * u1[j] + g_b * u0[j]
                    g_jr0 += gu0 * M[i, j]
                    g_jr1 += gu1 * M[i, j]
                    g_M[i, j] = jr0[i] * gu0 + jr1[i] * gu1
                g_rz += fx * g_jr0 * viewmats[c, 0, i] + fy * g_jr1 * viewmats[c, 1, i]
                g_jr0_r2 += g_jr0 * viewmats[c, 2, i]
                g_jr1_r2 += g_jr1 * viewmats[c, 2, i]
            g_rz -= 2.0 * rz * (fx * tx * g_jr0_r2 + fy * ty * g_jr1_r2)
            g_tx -= fx * rz * rz * g_jr0_r2
            g_ty -= fy * rz * rz * g_jr1_r2
            # scales and the unit quaternion from M = R diag(s)
            for i in range(3):
                for j in range(3):
                    G[3 * i + j] = g_M[i, j] * scales[n, j]
            for j in range(3):
                g_scales[n, j] += g_M[0, j] * R[j] + g_M[1, j] * R[3 + j] + g_M[2, j] * R[6 + j]
            gw = 2.0 * (-qz * G[1] + qy * G[2] + qz * G[3] - qx * G[5] - qy * G[6] + qx * G[7])
            gx = 2.0 * (qy * G[1] + qz * G[2] + qy * G[3] - 2 * qx * G[4] - qw * G[5] + qz * G[6] + qw * G[7] - 2 * qx * G[8])
            gy = 2.0 * (-2 * qy * G[0] + qx * G[1] + qw * G[2] + qx * G[3] + qz * G[5] - qw * G[6] + qz * G[7] - 2 * qy * G[8])
            gz = 2.0 * (-2 * qz * G[0] - qw * G[1] + qx * G[2] + qw * G[3] - 2 * qz * G[4] + qy * G[5] + qx * G[6] + qy * G[7])
            dot = qw * gw + qx * gx + qy * gy + qz * gz
            g_quats[n, 0] += (gw - qw * dot) / qn
            g_quats[n, 1] += (gx - qx * dot) / qn
            g_quats[n, 2] += (gy - qy * dot) / qn
            g_quats[n, 3] += (gz - qz * dot) / qn
            # --- means2d = (fx x rz + cx, fy y rz + cy); tx, ty; rz = 1/z ---
            gmx, gmy = g_means2d[c, n, 0], g_means2d[c, n, 1]
            g_px = gmx * fx * rz
            g_py = gmy * fy * rz
            g_rz += gmx * fx * px + gmy * fy * py
            g_z = 0.0
            if x_inside:  # tx = z·(x/z) = x
                g_px += g_tx
            else:  # tx = z·limit
                g_z += g_tx * (lim_x_pos if xr >= lim_x_pos else -lim_x_neg)
            if y_inside:
                g_py += g_ty
            else:
                g_z += g_ty * (lim_y_pos if yr >= lim_y_pos else -lim_y_neg)
            g_z -= g_rz * rz * rz
            g_pz = (g_z if in_range else 0.0) + g_depths[c, n]
            for k in range(3):
                g_means[n, k] += viewmats[c, 0, k] * g_px + viewmats[c, 1, k] * g_py + viewmats[c, 2, k] * g_pz
    return g_means, g_quats, g_scales, g_op_in


# --- compositing ---------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _ellipse_rows(a, b, c, my, op, height):  # noqa: ANN001, ANN202
    """First and last pixel row of the alpha >= 1/255 ellipse (with the torch backend's margin), and 2·sigma's limit."""
    s2 = 2.0 * max(math.log(op * 255.0), 0.0) * (1 + 1e-4) + 2e-4
    det = a * c - b * b
    ry = math.sqrt(s2 * a / det)
    y0 = int(min(max(math.ceil(my - ry - 0.5), 0.0), float(height)))
    y1 = int(min(max(math.floor(my + ry - 0.5), -1.0), float(height - 1)))
    return y0, y1, s2, det


@njit(cache=True, inline="always")
def _row_span(a, b, mx, dy, s2, det, width):  # noqa: ANN001, ANN202
    """First and last pixel column of the ellipse in the row at offset dy = my - (y + 0.5) (x1 < x0: empty)."""
    disc = s2 * a - det * dy * dy
    if disc < 0:
        return 0, -1
    half = math.sqrt(disc) / a
    centre = mx - 0.5 + b * dy / a
    x0 = int(min(max(math.ceil(centre - half - 1e-3), 0.0), float(width)))
    x1 = int(min(max(math.floor(centre + half + 1e-3), -1.0), float(width - 1)))
    return x0, x1


@njit(cache=True, parallel=True, fastmath=FAST)
def composite_forward(means2d, conics, opacities, feats, order, n_visible, width, height, save_pairs,  # noqa: ANN001, ANN201
                      n_bands):
    """Front-to-back compositing of depth-ordered Gaussians, Gaussian-major over each one's ellipse.

    Args: means2d [C,N,2], conics [C,N,3], opacities [C,N], feats [Cf,N,D] (Cf = 1: shared by all
    cameras, or C), order [C,N] int64 (visible Gaussians front to back first), n_visible [C],
    image size, save_pairs (keep the composited pairs for the backward), n_bands (row bands
    per camera; the C·n_bands bands are composited in parallel, each by one thread).
    Returns: image [C,H*W,D], final transmittance [C,H*W], and the composited pairs: pair_gauss
    (index n), pair_pix (index in the camera's H*W), pair_trans (transmittance in front of the
    pair), band b's pairs at [band_start[b], band_start[b] + band_count[b]) in Gaussian-major
    front-to-back order. Each pixel sees its Gaussians front to back: gsplat's per-pixel loop.
    """
    C = means2d.shape[0]
    D = feats.shape[2]
    HW = width * height
    band_rows = (height + n_bands - 1) // n_bands
    n_items = C * n_bands
    image = np.zeros((C, HW, D))
    trans = np.ones((C, HW))
    capacity = np.zeros(n_items + 1, dtype=np.int64)
    if save_pairs:  # an upper bound on each band's pairs: its pixels inside all ellipses
        for item in prange(n_items):
            c, y_lo = item // n_bands, (item % n_bands) * band_rows
            y_hi = min(height, y_lo + band_rows) - 1
            total = 0
            for k in range(n_visible[c]):
                n = order[c, k]
                a, b, cc = conics[c, n, 0], conics[c, n, 1], conics[c, n, 2]
                mx, my = means2d[c, n, 0], means2d[c, n, 1]
                y0, y1, s2, det = _ellipse_rows(a, b, cc, my, opacities[c, n], height)
                for y in range(max(y0, y_lo), min(y1, y_hi) + 1):
                    x0, x1 = _row_span(a, b, mx, my - (y + 0.5), s2, det, width)
                    total += max(x1 - x0 + 1, 0)
            capacity[item + 1] = total
    band_start = np.cumsum(capacity)[:n_items]
    band_count = np.zeros(n_items, dtype=np.int64)
    pair_gauss = np.empty(capacity.sum(), dtype=np.int32)
    pair_pix = np.empty(capacity.sum(), dtype=np.int32)
    pair_trans = np.empty(capacity.sum())
    for item in prange(n_items):
        c, y_lo = item // n_bands, (item % n_bands) * band_rows
        y_hi = min(height, y_lo + band_rows) - 1
        fc = 0 if feats.shape[0] == 1 else c
        done = np.zeros(max(y_hi - y_lo + 1, 0) * width, dtype=np.bool_)
        count = band_start[item]
        for k in range(n_visible[c]):
            n = order[c, k]
            a, b, cc = conics[c, n, 0], conics[c, n, 1], conics[c, n, 2]
            mx, my, op = means2d[c, n, 0], means2d[c, n, 1], opacities[c, n]
            y0, y1, s2, det = _ellipse_rows(a, b, cc, my, op, height)
            for y in range(max(y0, y_lo), min(y1, y_hi) + 1):
                dy = my - (y + 0.5)
                x0, x1 = _row_span(a, b, mx, dy, s2, det, width)
                for x in range(x0, x1 + 1):
                    pix = y * width + x
                    if done[pix - y_lo * width]:
                        continue
                    dx = mx - (x + 0.5)
                    sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                    if sigma < 0:
                        continue
                    alpha = min(MAX_ALPHA, op * math.exp(-sigma))
                    if alpha < ALPHA_THRESHOLD:
                        continue
                    t = trans[c, pix]
                    next_t = t * (1.0 - alpha)
                    if next_t <= T_STOP:
                        done[pix - y_lo * width] = True
                        continue
                    w = alpha * t
                    for d in range(D):
                        image[c, pix, d] += w * feats[fc, n, d]
                    trans[c, pix] = next_t
                    if save_pairs:
                        pair_gauss[count] = n
                        pair_pix[count] = pix
                        pair_trans[count] = t
                        count += 1
        band_count[item] = count - band_start[item]
    return image, trans, pair_gauss, pair_pix, pair_trans, band_start, band_count


@njit(cache=True, parallel=True, fastmath=FAST)
def composite_backward(means2d, conics, opacities, feats, width, n_bands, pair_gauss, pair_pix,  # noqa: ANN001, ANN201
                       pair_trans, band_start, band_count, g_image, g_trans, need_feats):
    """Gradients of ``composite_forward`` from its stored pairs, walked back to front per band.

    Args: the forward's means2d, conics, opacities, feats, width and n_bands; its pairs and bands;
    dL/d image [C,H*W,D] and dL/d final transmittance [C,H*W]; need_feats.
    Returns: dL/d(means2d [C,N,2], conics [C,N,3], opacities [C,N], feats [C,N,D] per camera,
    summed by the caller when the features are shared). Bands run in parallel, each into its own
    gradient buffers (no shared writes), which are then summed per camera.
    """
    C, N = means2d.shape[0], means2d.shape[1]
    D = feats.shape[2]
    n_items = C * n_bands
    g_geom = np.zeros((n_items, N, 6))  # per band: means2d (2), conics (3), opacity
    g_feat_bands = np.zeros((n_items if need_feats else 0, N, D))
    for item in prange(n_items):
        c = item // n_bands
        fc = 0 if feats.shape[0] == 1 else c
        if band_count[item] == 0:
            continue
        first = band_start[item]
        pix_lo = pair_pix[first:first + band_count[item]].min()
        pix_hi = pair_pix[first:first + band_count[item]].max()
        behind = g_trans[c, pix_lo:pix_hi + 1].copy()  # B per pixel: starts at dL/dT_final
        for p in range(first + band_count[item] - 1, first - 1, -1):
            n, pix, t = pair_gauss[p], pair_pix[p], pair_trans[p]
            y = pix // width
            x = pix - y * width
            a, b, cc = conics[c, n, 0], conics[c, n, 1], conics[c, n, 2]
            dx = means2d[c, n, 0] - (x + 0.5)
            dy = means2d[c, n, 1] - (y + 0.5)
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            e = math.exp(-sigma)
            raw = opacities[c, n] * e
            alpha = min(MAX_ALPHA, raw)
            gw = 0.0
            for d in range(D):
                gw += g_image[c, pix, d] * feats[fc, n, d]
            if need_feats:
                w = alpha * t
                for d in range(D):
                    g_feat_bands[item, n, d] += w * g_image[c, pix, d]
            g_alpha = t * (gw - behind[pix - pix_lo])
            behind[pix - pix_lo] = alpha * gw + (1.0 - alpha) * behind[pix - pix_lo]
            if raw <= MAX_ALPHA:  # above it alpha is clamped: no gradient to sigma or opacity
                g_sigma = -g_alpha * raw
                g_geom[item, n, 0] += g_sigma * (a * dx + b * dy)
                g_geom[item, n, 1] += g_sigma * (cc * dy + b * dx)
                g_geom[item, n, 2] += g_sigma * 0.5 * dx * dx
                g_geom[item, n, 3] += g_sigma * dx * dy
                g_geom[item, n, 4] += g_sigma * 0.5 * dy * dy
                g_geom[item, n, 5] += g_alpha * e
    g_means2d = np.zeros((C, N, 2))
    g_conics = np.zeros((C, N, 3))
    g_opac = np.zeros((C, N))
    g_feats = np.zeros((C if need_feats else 0, N, D))
    for n in prange(N):  # sum the bands of each camera
        for item in range(n_items):
            c = item // n_bands
            g_means2d[c, n, 0] += g_geom[item, n, 0]
            g_means2d[c, n, 1] += g_geom[item, n, 1]
            for j in range(3):
                g_conics[c, n, j] += g_geom[item, n, 2 + j]
            g_opac[c, n] += g_geom[item, n, 5]
            if need_feats:
                for d in range(D):
                    g_feats[c, n, d] += g_feat_bands[item, n, d]
    return g_means2d, g_conics, g_opac, g_feats


# The same loops compiled without numba's parallel runtime (prange runs as range): used when torch has one
# thread, as in each local worker of `--workers`. Why: with its pool present but one thread asked for, a
# parallel kernel ran ~50x slower when two such processes shared two cores (measured: 164 ms vs 3.4 ms).
composite_forward_serial = njit(cache=True, fastmath=FAST)(composite_forward.py_func)
composite_backward_serial = njit(cache=True, fastmath=FAST)(composite_backward.py_func)
