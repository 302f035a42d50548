"""kvferry: moves KV-cache blocks between the prefill and decode workers of a disaggregated
LLM serving system. A Python face over the C++ library (libkvferry); Python never sees CAF or
UCX.

    import kvferry, numpy as np
    with kvferry.Node({"transport": "tcp"}) as prefill, kvferry.Node() as decode:
        kv = np.zeros(1 << 20, dtype=np.uint8)
        src = prefill.register(kv)                         # numpy array, torch tensor, (ptr, size)
        sent = prefill.send("req-1", [(src, 0, 65536)])    # spans: (region, offset, bytes)
        ...
        peer = decode.connect("127.0.0.1", prefill.port)
        got = decode.receive("req-1", peer, np.array([[dst, 0, 65536]], dtype=np.uint64))
        got.wait(5.0)                                      # {"status": "succeeded", ...}

Every call that waits releases the GIL. Errors raise kvferry.Error (``.code``, ``.message``);
a send or receive the node refuses returns a Transfer that is already failed, as in C++.
"""

from .errors import Error
from . import _kvferry
from ._kvferry import Transfer, config_keys

__all__ = ["Node", "Transfer", "Error", "config_keys"]


class Node(_kvferry.Node):
    """One kvferry node: a prefill worker's, a decode worker's, or both.

    ``config`` is None (defaults), a dict of configuration keys (see ``config_keys()``; values
    are read as on the command line, ``{"listen_port": 7000, "transport": "tcp"}``) or the path
    of a TOML file. ``KVFERRY_*`` environment variables apply as well. Use it as a context
    manager, or call ``stop()``.
    """

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def stats(self) -> dict:
        """The counters of ``health()`` that only grow: for connector statistics."""
        h = self.health()
        return {k: h[k] for k in ("succeeded", "failed", "cancelled", "restarts",
                                  "worker_replacements", "writes_refused", "lost_wakeups",
                                  "bytes_sent",
                                  "bytes_received")}
