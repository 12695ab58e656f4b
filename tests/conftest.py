"""Shared fixtures. Eight fake CPU devices are requested before JAX starts, for the sharding tests."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

from helpers import make_llama, smollm2  # noqa: E402,F401  (fixtures)
