"""The node double's former single module, kept so that `aicert_localcluster.nodes` imports keep working:
it re-exports the public names of the `aicert_localcluster.kubelet` package, where the double lives
(its package docstring says what is where).
"""

from .kubelet import *  # noqa: F403
from .kubelet import __all__ as __all__
from .kubelet.client import log as log
