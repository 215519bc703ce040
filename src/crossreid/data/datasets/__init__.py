"""Built-in dataset loaders: importing this package registers them (a new loader adds its module here)."""

from crossreid.data.datasets import biwi, llcm, manifest, regdb, rgbd_openreid, synthetic, sysu_mm01  # noqa: F401
