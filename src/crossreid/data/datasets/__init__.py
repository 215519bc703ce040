"""Built-in dataset loaders; importing this package registers them."""

from crossreid.data.datasets import manifest, synthetic  # noqa: F401
