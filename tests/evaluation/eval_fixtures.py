"""Random segmentation inputs/outputs shared by the evaluation tests."""

import numpy as np
import torch

NUM_CLASSES = 4  # 0..2 things, 3 stuff
IS_THING = [True, True, True, False]


def _rect(rng, h, w):
    m = np.zeros((h, w), bool)
    y0, x0 = rng.integers(0, h - 6), rng.integers(0, w - 6)
    y1, x1 = y0 + rng.integers(3, 14), x0 + rng.integers(3, 14)
    m[y0:y1, x0:x1] = True
    return m


def random_case(seed, n_images=6, size=32):
    """Inputs with GT instances (+ one stuff segment) and outputs with noisy detections."""
    rng = np.random.default_rng(seed)
    inputs, outputs = [], []
    for i in range(n_images):
        n = int(rng.integers(1, 5))
        masks = [_rect(rng, size, size) for _ in range(n)]
        classes = [int(rng.integers(0, 3)) for _ in range(n)]
        taken = np.any(masks, 0)
        masks.append(~taken)  # stuff
        classes.append(3)
        is_thing = [True] * n + [False]
        sem = np.full((size, size), 255)
        for m, c in zip(masks, classes):
            sem[m & (sem == 255)] = c
        for k in range(n):  # make instance masks disjoint for the panoptic view
            for j in range(k):
                masks[k] &= ~masks[j]
        inputs.append({"image_id": i, "height": size, "width": size,
                       "sem_seg": torch.as_tensor(sem),
                       "instances": {"masks": torch.as_tensor(np.stack(masks)),
                                     "classes": torch.tensor(classes),
                                     "is_thing": torch.tensor(is_thing)}})
        dm, dc, ds = [], [], []
        for m, c in zip(masks[:n], classes[:n]):
            if rng.random() < 0.2:
                continue  # missed ground truth
            shift = int(rng.integers(0, 3))
            dm.append(np.roll(m, shift, axis=1))
            dc.append(c if rng.random() < 0.85 else int(rng.integers(0, 3)))
            ds.append(float(rng.random()))
        for _ in range(int(rng.integers(0, 3))):  # unmatched detections
            dm.append(_rect(rng, size, size))
            dc.append(int(rng.integers(0, 3)))
            ds.append(float(rng.random()))
        masks_t = torch.as_tensor(np.stack(dm)) if dm else torch.zeros(0, size, size, dtype=bool)
        label = sem.copy()
        label[label == 255] = 3
        ids = np.zeros((size, size), np.int64)
        segs = []
        for k, (m, c) in enumerate(zip(dm, dc)):
            ids[m] = k + 1
            segs.append({"id": k + 1, "category_id": c, "isthing": True, "score": ds[k]})
        segs.append({"id": len(dm) + 1, "category_id": 3, "isthing": False, "score": 1.0})
        ids[ids == 0] = len(dm) + 1
        scores = torch.rand(NUM_CLASSES + 1, size, size, generator=torch.Generator().manual_seed(i))
        outputs.append({"instances": {"masks": masks_t, "scores": torch.tensor(ds),
                                      "classes": torch.tensor(dc, dtype=torch.long)},
                        "panoptic_seg": (torch.as_tensor(ids), segs),
                        "sem_seg": scores})
    return inputs, outputs
