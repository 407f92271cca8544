"""A deblurring job for tests/test_deblur_job.py: a tiny MGSTNet (fixed seed) deblurs INPUT into OUT.

    python tests/deblur_worker.py INPUT OUT [HANG_AT]

With HANG_AT = n, the n-th output file is written in full to its temporary name, then the process
prints `hanging` and waits (to be killed) before renaming it into place.
"""

import sys
import time

from unroll import atomic
from unroll.config import Config
from unroll.inference import deblur
from unroll.inference.model import Model
from unroll.models import registry

TINY = Config(stages=2, scales=1, kernel_rcabs=1, image_rcabs=1, features=8, kernel_features=4,
              kernel_size=7, channels=3)

if len(sys.argv) > 3:
    hang_at, synced, sync = int(sys.argv[3]), [0], atomic._sync

    def hanging_sync(path):
        sync(path)
        synced[0] += 1
        if synced[0] == hang_at:
            print("hanging", flush=True)
            time.sleep(120)

    atomic._sync = hanging_sync

written = deblur.deblur_files(Model(TINY, *registry.build_split(TINY)), [sys.argv[1]], sys.argv[2])
print(f"written {len(written)}")
