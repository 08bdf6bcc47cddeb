"""The virtual mirror viewpoint: what a mirror in the display's plane would show the person in front of it.

Geometry (Phase 4 of the roadmap: "render from the reflected camera across the display plane"): the display's
camera sits in the display plane, looking at the face along the plane's normal ``n``. A mirror in that plane
shows the viewer the scene seen from their eye reflected across the plane, ``e' = e - 2 ((e - c) . n) n``,
mirrored left to right. Reflecting the eye's camera across the plane gives a left-handed frame; flipping its
x axis makes it a proper camera whose rotation is the display camera's. So the mirror camera is the display
camera's rotation at ``e'``, and the picture on the display is that camera's render flipped horizontally (a
flip changes no metric, so metrics are taken on the unflipped render). The focal length is scaled by the
ratio of the distances to the eye (x2 for an eye in front of the display), so the face keeps the display
camera's framing: the mirror image at life size rather than at twice the distance.

Gaze correction (the eyes look at the display, not at their reflection) is not modelled.
"""
from __future__ import annotations

import numpy as np

MIRROR_CAMERA_INDEX = 90  # the camera_index mirror frames carry (frame ids ".../c90")


def head_point_world(point_head: np.ndarray, rotation: np.ndarray, neck_pose: np.ndarray,
                     translation: np.ndarray) -> np.ndarray:
    """A head-local point [3] in world coordinates under the rigid head pose R(rotation) R(neck_pose) + t."""
    from reflect.data.synthetic_render import axis_angle_to_matrix

    rot = axis_angle_to_matrix(np.asarray(rotation, np.float64)) @ axis_angle_to_matrix(np.asarray(neck_pose, np.float64))
    return rot @ np.asarray(point_head, np.float64) + np.asarray(translation, np.float64)


def mirror_camera(display_viewmat: np.ndarray, display_K: np.ndarray, eye_world: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The mirror camera for an eye in front of a display camera.

    Args:
        display_viewmat: the display camera's world-to-camera matrix [4,4] (OpenCV axes: x right, y down, z
            forward, as the reader stores ``viewmat``).
        display_K: its intrinsics [3,3] (pixels).
        eye_world: the viewer's eye point [3] in world coordinates (in front of the camera).
    Returns:
        (viewmat [4,4], K [3,3]) of the proper camera whose render, flipped left to right, is the mirror image.
    Raises:
        ValueError when the eye is not in front of the display (no reflection to see).
    """
    w2c = np.asarray(display_viewmat, np.float64)
    rot_w2c = w2c[:3, :3]
    centre = -rot_w2c.T @ w2c[:3, 3]
    normal = rot_w2c[2]  # the optical axis in world coordinates: the display plane's normal, toward the face
    depth = float((np.asarray(eye_world, np.float64) - centre) @ normal)
    if depth <= 0:
        raise ValueError(f"the eye point is {depth:.3f} m in front of the display camera: it must be in front")
    reflected = np.asarray(eye_world, np.float64) - 2.0 * depth * normal
    viewmat = np.eye(4)
    viewmat[:3, :3] = rot_w2c
    viewmat[:3, 3] = -rot_w2c @ reflected
    K = np.asarray(display_K, np.float64).copy()
    K[0, 0] *= 2.0  # distance to the eye: 2 * depth from the mirror camera, depth from the display camera
    K[1, 1] *= 2.0
    return viewmat, K
