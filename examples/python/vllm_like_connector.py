"""A worker-side KV connector shaped like vLLM's (KVConnectorBase_V1), over kvferry.

Run it in one command (two processes: a prefill worker and a decode worker):

    PYTHONPATH=build/python /usr/bin/python3 examples/python/vllm_like_connector.py

The prefill process offers a request's whole KV cache as one layer-wise kvferry transfer before
computing it, then marks each layer ready as it computes it (save_kv_layer: layer_ready); the
decode process loads the request with one receive (start_load_kv) and waits layer by layer
(wait_for_layer_load: the layer_landed event), so the transfer overlaps the prefill's compute.
get_finished() reports requests whose sends were released (the prefill may free their blocks:
vLLM's delay-free) and whose loads completed. The KV caches are numpy arrays here; torch CPU
tensors register the same way (anything with data_ptr()).
"""
import multiprocessing as mp
import sys
import time

import numpy as np

import kvferry

LAYERS = 4
BLOCKS_PER_LAYER = 16   # blocks in each layer's cache
BLOCK_BYTES = 16 << 10  # bytes per block (a page of tokens' K and V)


class KvferryConnector:
    """The calls a vLLM worker makes on its connector, served by one kvferry node."""

    def __init__(self, role, config=None):
        self.role = role
        self.node = kvferry.Node(config or {"transport": "tcp"})
        self.regions = {}          # layer name -> kvferry region (in layer order)
        self.peer = None
        self.sending = {}          # request id -> Transfer, every layer (prefill)
        self.loading = {}          # request id -> (Transfer, local block ids) (decode)
        self.load_errors = set()   # local block ids whose load failed

    # -- both sides --------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches):
        """One cache per layer (a numpy array or a torch tensor), registered once."""
        for name, cache in kv_caches.items():
            self.regions[name] = self.node.register(cache)

    def spans(self, block_ids):
        """The request's blocks in every layer, layer after layer: one layer-wise transfer."""
        return np.array([[region, b * BLOCK_BYTES, BLOCK_BYTES]
                         for region in self.regions.values() for b in block_ids],
                        dtype=np.uint64)

    def layer_index(self, layer):
        return list(self.regions).index(layer)

    # -- prefill side ------------------------------------------------------------------------
    def start_request(self, request_id, block_ids):
        """Offers every layer of request_id before it is computed (no wait)."""
        self.sending[request_id] = self.node.send(
            request_id, self.spans(block_ids), layers=[len(block_ids)] * len(self.regions))

    def save_kv_layer(self, layer, request_id):
        """The layer's KV for request_id is computed: it may go now (never blocks)."""
        self.node.layer_ready(request_id, self.layer_index(layer))

    def request_finished(self, request_id):
        """vLLM's delay_free: True while the blocks must not be freed yet."""
        t = self.sending.get(request_id)
        return t is not None and not t.released

    # -- decode side -------------------------------------------------------------------------
    def connect(self, host, port):
        self.peer = self.node.connect(host, port)

    def start_load_kv(self, request_id, local_block_ids, remote_block_count):
        """Starts loading every layer of request_id into local_block_ids (no wait)."""
        assert len(local_block_ids) == remote_block_count
        t = self.node.receive(request_id, self.peer, self.spans(local_block_ids))
        self.loading[request_id] = (t, list(local_block_ids))

    def wait_for_layer_load(self, request_id, layer, timeout=30.0):
        """Blocks (GIL released) until that layer of request_id is in place."""
        t, local = self.loading[request_id]
        if not t.wait_layer(self.layer_index(layer), timeout):
            self.load_errors.update(local)
            raise RuntimeError(f"{layer} of {request_id} did not land: {t.result}")

    def get_block_ids_with_load_errors(self):
        return set(self.load_errors)

    # -- both: what finished -----------------------------------------------------------------
    def get_finished(self):
        """(finished_sending, finished_recving): request ids whose every layer was released
        (prefill: free the blocks) or loaded (decode: schedule the request)."""
        self.node.poll()  # events are also kept per handle; drain the queue
        sent = {r for r, t in self.sending.items() if t.released}
        loaded = {r for r, (t, _) in self.loading.items() if t.status == "succeeded"}
        for r in sent:
            del self.sending[r]
        for r in loaded:
            del self.loading[r]
        return sent, loaded

    def stats(self):
        return self.node.stats()

    def close(self):
        self.node.stop()


def fill(request_no, layer_no, block):
    """What prefill computes for a block: a pattern the decode can check."""
    return (request_no * 31 + layer_no * 7 + block) % 251


def prefill_worker(port_out, go_in, requests):
    conn = KvferryConnector("prefill")
    caches = {f"layer{i}": np.zeros(BLOCKS_PER_LAYER * BLOCK_BYTES, dtype=np.uint8)
              for i in range(LAYERS)}
    conn.register_kv_caches(caches)
    port_out.send(conn.node.port)
    go_in.recv()  # the decode has connected
    for r in range(requests):
        blocks = [(r * 3 + k) % BLOCKS_PER_LAYER for k in range(3)]
        conn.start_request(f"req-{r}", blocks)  # offered before any layer exists
        port_out.send(blocks)  # the scheduler tells the decode where the request's blocks are
        for i in range(LAYERS):  # "compute" a layer, then let it go
            layer = f"layer{i}"
            for b in blocks:
                caches[layer][b * BLOCK_BYTES:(b + 1) * BLOCK_BYTES] = fill(r, i, b)
            time.sleep(0.01)
            conn.save_kv_layer(layer, f"req-{r}")
    freed = set()
    deadline = time.time() + 30
    while len(freed) < requests and time.time() < deadline:
        sent, _ = conn.get_finished()
        freed |= sent
        time.sleep(0.005)
    assert all(not conn.request_finished(f"req-{r}") for r in range(requests))
    print(f"prefill: {len(freed)} requests released (their blocks may be freed)", flush=True)
    conn.close()
    sys.exit(0 if len(freed) == requests else 1)


def decode_worker(port_in, go_out, requests):
    conn = KvferryConnector("decode")
    caches = {f"layer{i}": np.zeros(BLOCKS_PER_LAYER * BLOCK_BYTES, dtype=np.uint8)
              for i in range(LAYERS)}
    conn.register_kv_caches(caches)
    conn.connect("127.0.0.1", port_in.recv())
    go_out.send(True)
    verified = 0
    for r in range(requests):
        local = [(r * 5 + k) % BLOCKS_PER_LAYER for k in range(3)]
        remote = port_in.recv()
        conn.start_load_kv(f"req-{r}", local, len(remote))
        for i in range(LAYERS):
            t0 = time.time()
            conn.wait_for_layer_load(f"req-{r}", f"layer{i}")
            for lb, rb in zip(local, remote):
                block = caches[f"layer{i}"][lb * BLOCK_BYTES:(lb + 1) * BLOCK_BYTES]
                assert (block == fill(r, i, rb)).all(), (r, i, lb, rb)
                verified += BLOCK_BYTES
            print(f"decode: req-{r} layer{i} landed ({len(local) * BLOCK_BYTES} B verified, "
                  f"waited {(time.time() - t0) * 1e3:.1f} ms)", flush=True)
        res = conn.loading[f"req-{r}"][0].wait(30.0)
        assert res is not None and res["status"] == "succeeded", res
        print(f"decode: req-{r} complete: {res['bytes']} B, queue {res['queue_us']} us, "
              f"transfer {res['transfer_us']} us", flush=True)
    _, loaded = conn.get_finished()
    print(f"decode: {len(loaded)} requests loaded, {verified} bytes verified; "
          f"errors: {sorted(conn.get_block_ids_with_load_errors())}", flush=True)
    conn.close()
    sys.exit(0 if len(loaded) == requests else 1)


def main(requests=3):
    ctx = mp.get_context("spawn")
    port_out, port_in = ctx.Pipe()
    go_out, go_in = ctx.Pipe()
    prefill = ctx.Process(target=prefill_worker, args=(port_out, go_in, requests))
    decode = ctx.Process(target=decode_worker, args=(port_in, go_out, requests))
    prefill.start()
    decode.start()
    decode.join(60)
    prefill.join(60)
    ok = decode.exitcode == 0 and prefill.exitcode == 0
    print("OK" if ok else f"FAILED (prefill {prefill.exitcode}, decode {decode.exitcode})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
