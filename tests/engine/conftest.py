"""Engine tests: make ``engine_toy`` importable and undo the global state training setup changes."""

from __future__ import annotations

import logging
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _restore_torch_state():
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    logger = logging.getLogger("mmmask")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    torch.set_num_threads(1)  # same numerics as the NUM_THREADS 1 subprocesses
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.set_rng_state(rng)
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    logger.propagate, logger.level = propagate, level
