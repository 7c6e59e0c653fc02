"""lowbit: quantize a network with every leading method, measure each on your own
data, and say which one to ship.

Importing lowbit is cheap and touches no GPU: submodules load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
