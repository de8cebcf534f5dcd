#!/usr/bin/env python3
"""bench/torch_stream.py: the PyTorch side of bench/stream.mjs. Reads an image folder the way
a PyTorch BYOL pipeline streams it: a Dataset that opens each file with PIL, converts it
('L' or 'RGB'), resizes it to cover SIZE and center-crops it (what openImageFolder does), and
returns a uint8 HWC tensor; a DataLoader with shuffling, batching and NUM_WORKERS worker
processes (persistent). Times whole epochs after one warm-up epoch and prints one JSON line:
{"torch", "images_per_s", "epochs", "workers"}.
Usage: python3 bench/torch_stream.py --dir D --channels 1|3 [--size H W] --batch B --workers W --seconds S
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image


class Folder(torch.utils.data.Dataset):
    def __init__(self, root, channels, size):
        self.files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs)
        self.mode = 'L' if channels == 1 else 'RGB'
        self.size = size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            im = im.convert(self.mode)
            if self.size is not None:
                h, w = self.size
                scale = max(h / im.height, w / im.width)
                rw, rh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
                im = im.resize((rw, rh), Image.BILINEAR)
                left, top = (rw - w) // 2, (rh - h) // 2
                im = im.crop((left, top, left + w, top + h))
            return torch.from_numpy(np.asarray(im).copy())


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--dir', required=True)
    p.add_argument('--channels', type=int, default=3)
    p.add_argument('--size', type=int, nargs=2, default=None)
    p.add_argument('--batch', type=int, default=256)
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--seconds', type=float, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = Folder(a.dir, a.channels, a.size)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                         persistent_workers=a.workers > 0)
    for _ in loader:  # warm-up epoch: worker start, file cache
        pass
    images, epochs, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < a.seconds or epochs < 1:
        for batch in loader:
            images += batch.shape[0]
        epochs += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({'torch': torch.__version__, 'images_per_s': images / elapsed, 'epochs': epochs, 'workers': a.workers}))


if __name__ == '__main__':
    main()
