"""README claim, on real photos and the real ImageNet weights: the LiteRT conversion of MobileNetV2 at
224 px gives the vectors of Keras (cosine >= 0.9999 per image; the README's own floor, no margin)."""

from __future__ import annotations

import numpy as np
import pytest

from ..conftest import FLOWERS, imagenet_keras_home

PER_CLASS = 20  # 100 photos of flowers-dev's 5 classes


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not FLOWERS.is_dir() or imagenet_keras_home() is None,
                    reason="needs flowers-dev and the ImageNet weights")
def test_litert_matches_keras_at_224_px_on_100_flowers(monkeypatch):
    from embedflow import backbones
    from embedflow.data import load_image

    monkeypatch.setenv("KERAS_HOME", str(imagenet_keras_home()))
    spec = backbones.get_spec("mobilenet_v2", 224)
    fp = backbones.fingerprint(spec)
    photos = [p for cls in sorted(d for d in FLOWERS.iterdir() if d.is_dir())
              for p in sorted(cls.glob("*.jpg"))[:PER_CLASS]]
    assert len(photos) == 5 * PER_CLASS
    pixels = np.stack([load_image(p, 224) for p in photos])
    fast = backbones.make_embedder(spec, fp, runtime="litert")(pixels)
    ref = backbones.make_embedder(spec, fp, runtime="keras")(pixels)
    assert fast.shape == ref.shape == (100, 1280)
    cosine = (fast * ref).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= 0.9999, f"min cosine {cosine.min():.6f} at {photos[int(cosine.argmin())].name}"
