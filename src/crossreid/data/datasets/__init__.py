"""Built-in dataset loaders: importing this package registers them (a new loader adds its module here)."""

from crossreid.data.datasets import manifest, synthetic  # noqa: F401
from crossreid.data.datasets import biwi, llcm, regdb, rgbd_openreid, sysu_mm01  # noqa: F401
