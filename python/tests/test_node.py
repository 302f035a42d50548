"""kvferry from Python: two nodes in this process over UCX tcp and CAF networking."""
import threading
import time

import numpy as np
import pytest

import kvferry

BLOCK = 4096


@pytest.fixture
def pair():
    with kvferry.Node({"transport": "tcp", "node_name": "py-prefill"}) as prefill, \
            kvferry.Node({"transport": "tcp", "node_name": "py-decode"}) as decode:
        src = (np.arange(16 * BLOCK) % 251).astype(np.uint8)
        dst = np.zeros(16 * BLOCK, dtype=np.uint8)
        pair = {
            "prefill": prefill, "decode": decode, "src": src, "dst": dst,
            "src_region": prefill.register(src), "dst_region": decode.register(dst),
        }
        pair["peer"] = decode.connect("127.0.0.1", prefill.port)
        yield pair


def test_a_transfer_moves_the_bytes_into_other_blocks_and_reports_both_events(pair):
    p, d = pair["prefill"], pair["decode"]
    sent = p.send("req-1", [(pair["src_region"], 0, BLOCK), (pair["src_region"], 5 * BLOCK, BLOCK)])
    spans = np.array([[pair["dst_region"], 3 * BLOCK, BLOCK], [pair["dst_region"], BLOCK, BLOCK]],
                     dtype=np.uint64)
    got = d.receive("req-1", pair["peer"], spans)
    result = got.wait(20.0)
    assert result is not None and result["status"] == "succeeded", result
    assert result["bytes"] == 2 * BLOCK and result["code"] == "none"
    assert result["transfer_us"] > 0 and result["first_byte_us"] > 0
    assert result["transport"].startswith("tcp "), result
    assert np.array_equal(pair["dst"][3 * BLOCK:4 * BLOCK], pair["src"][0:BLOCK])
    assert np.array_equal(pair["dst"][BLOCK:2 * BLOCK], pair["src"][5 * BLOCK:6 * BLOCK])
    assert got.wait_released(20.0) and sent.wait_released(20.0)
    assert sent.result["status"] == "succeeded" and got.status == "succeeded"
    kinds = sorted(e["kind"] for e in d.poll() if e["request_id"] == "req-1")
    assert kinds == ["completed", "released"]
    assert d.stats()["bytes_received"] == 2 * BLOCK
    assert p.health()["healthy"]


def test_a_refused_send_is_a_failed_transfer_naming_the_problem(pair):
    bad = pair["prefill"].send("bad", [(999, 0, BLOCK)])
    assert bad.result["status"] == "failed"
    assert bad.result["code"] == "unknown_region"
    assert "999" in bad.result["message"]
    outside = pair["prefill"].send("outside", [(pair["src_region"], 16 * BLOCK, BLOCK)])
    assert outside.result["code"] == "out_of_range"
    with pytest.raises(ValueError):
        pair["prefill"].send("shape", np.zeros((2, 2), dtype=np.uint64))


def test_deadline_and_cancel_end_requests_nobody_serves(pair):
    d = pair["decode"]
    late = d.receive("never-offered", pair["peer"], [(pair["dst_region"], 0, BLOCK)],
                     deadline_ms=100)
    r = late.wait(20.0)
    assert r["status"] == "failed" and r["code"] == "timed_out"
    waiting = pair["prefill"].send("never-fetched", [(pair["src_region"], 0, BLOCK)])
    assert pair["prefill"].cancel("never-fetched") == "cancelled_before_advertise"
    assert waiting.wait(20.0)["status"] == "cancelled"
    assert waiting.wait_released(20.0)
    assert pair["prefill"].cancel("no-such-request") == "not_found"


def test_a_python_thread_keeps_running_while_a_call_waits(pair):
    # Every waiting call releases the GIL: a thread counting meanwhile must get far.
    count, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        waiting = pair["decode"].receive("gil", pair["peer"], [(pair["dst_region"], 0, BLOCK)])
        before = count[0]
        assert waiting.wait(0.5) is None  # nobody offers it: the wait runs out
        during_wait = count[0] - before
        before = count[0]
        assert pair["decode"].wait_events(0.3) is not None
        during_events = count[0] - before
    finally:
        stop.set()
        t.join()
    # Held GIL: the thread would advance only at the few switch points around the call.
    assert during_wait > 10000, during_wait
    assert during_events > 10000, during_events
    pair["decode"].cancel("gil")


def test_errors_raise_kvferry_error_with_the_code(tmp_path):
    with pytest.raises(kvferry.Error) as e:
        kvferry.Node({"staging_slots": 0})
    assert e.value.code == "invalid_argument" and "staging_slots" in e.value.message
    with pytest.raises(kvferry.Error) as e:
        kvferry.Node({"no_such_key": 1})
    assert "no_such_key" in e.value.message
    toml = tmp_path / "node.toml"
    toml.write_text('node_name = "from-toml"\ntransport = "tcp"\n')
    with kvferry.Node(toml) as n:
        assert n.port > 0
        with pytest.raises(kvferry.Error) as e:
            n.connect("127.0.0.1", 1)  # nothing listens there
        assert e.value.code in ("peer_unreachable", "timed_out", "not_connected")
        with pytest.raises(ValueError):
            n.register(np.zeros((4, 4), dtype=np.uint8)[:, ::2])  # not contiguous
    with pytest.raises(kvferry.Error) as e:
        n.poll()
    assert e.value.code == "stopped"
    assert "staging_slots" in kvferry.config_keys()


class FakeTensor:
    """What register() uses of a torch tensor: data_ptr(), nbytes, is_contiguous()."""

    def __init__(self, array):
        self.array = array
        self.nbytes = array.nbytes

    def data_ptr(self):
        return self.array.ctypes.data

    def is_contiguous(self):
        return True


def test_memory_from_a_pointer_or_a_tensor_like_object(pair):
    p, d = pair["prefill"], pair["decode"]
    src = np.full(BLOCK, 7, dtype=np.uint8)
    dst = np.zeros(BLOCK, dtype=np.uint8)
    by_ptr = p.register(src.ctypes.data, src.nbytes)
    by_tensor = d.register(FakeTensor(dst))
    p.send("ptr", [(by_ptr, 0, BLOCK)])
    r = d.receive("ptr", pair["peer"], [(by_tensor, 0, BLOCK)]).wait(20.0)
    assert r["status"] == "succeeded"
    assert (dst == 7).all()


def test_torch_tensors_register_and_transfer(pair):
    torch = pytest.importorskip("torch")
    src = torch.arange(BLOCK, dtype=torch.uint8)
    dst = torch.zeros(BLOCK, dtype=torch.uint8)
    a = pair["prefill"].register(src)
    b = pair["decode"].register(dst)
    pair["prefill"].send("torch", [(a, 0, BLOCK)])
    r = pair["decode"].receive("torch", pair["peer"], [(b, 0, BLOCK)]).wait(20.0)
    assert r["status"] == "succeeded"
    assert torch.equal(src, dst)


def test_connect_refuses_a_peer_with_another_layout_tag():
    tag = b"llama-3-8b\x00fp16"
    with kvferry.Node({"transport": "tcp", "layout_tag": tag}) as prefill, \
            kvferry.Node({"transport": "tcp", "layout_tag": b"llama-3-8b\x00fp8"}) as other, \
            kvferry.Node({"transport": "tcp", "layout_tag": tag}) as same:
        with pytest.raises(kvferry.Error) as e:
            other.connect("127.0.0.1", prefill.port)
        assert e.value.code == "incompatible_peer"
        assert same.connect("127.0.0.1", prefill.port) == 1


def test_a_declined_offer_is_released_without_a_transfer(pair):
    offer = pair["prefill"].send("cached", [(pair["src_region"], 0, BLOCK)])
    assert pair["decode"].decline("cached", pair["peer"]) == "cancelled_before_advertise"
    assert offer.wait(20.0)["status"] == "cancelled"
    assert offer.wait_released(20.0)
    assert pair["decode"].decline("cached", pair["peer"]) == "not_found"
    with pytest.raises(kvferry.Error) as e:
        pair["decode"].decline("cached", 99)
    assert e.value.code == "not_connected"


def test_a_receive_can_fetch_only_the_blocks_it_lacks(pair):
    src = pair["src_region"]
    pair["prefill"].send("prefix", [(src, i * BLOCK, BLOCK) for i in range(4)])
    got = pair["decode"].receive("prefix", pair["peer"],
                                 [(pair["dst_region"], 8 * BLOCK, BLOCK), (pair["dst_region"], 9 * BLOCK, BLOCK)],
                                 ranges=[(2, 2)])
    r = got.wait(20.0)
    assert r["status"] == "succeeded" and r["bytes"] == 2 * BLOCK
    assert np.array_equal(pair["dst"][8 * BLOCK:10 * BLOCK], pair["src"][2 * BLOCK:4 * BLOCK])


def test_metrics_and_healthz_are_served_over_http_to_a_standard_client():
    import urllib.error
    import urllib.request
    with kvferry.Node({"transport": "tcp", "metrics_listen": "127.0.0.1:0"}) as prefill, \
            kvferry.Node({"transport": "tcp"}) as decode:
        assert prefill.metrics_port > 0 and decode.metrics_port == 0
        src = np.ones(BLOCK, dtype=np.uint8)
        dst = np.zeros(BLOCK, dtype=np.uint8)
        sent = prefill.send("m-1", [(prefill.register(src), 0, BLOCK)])
        peer = decode.connect("127.0.0.1", prefill.port)
        got = decode.receive("m-1", peer, [(decode.register(dst), 0, BLOCK)])
        assert got.wait(20.0)["status"] == "succeeded"
        assert sent.wait_released(20.0)
        base = f"http://127.0.0.1:{prefill.metrics_port}"
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
        assert 'kvferry_transfers_total{side="send",outcome="succeeded"} 1\n' in text
        assert f'kvferry_bytes_total{{direction="sent"}} {BLOCK}\n' in text
        assert "kvferry_transfers_total{side=\"send\",outcome=\"succeeded\"} 1" in prefill.metrics()
        with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
            assert r.status == 200 and r.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/nope", timeout=10)
        assert missing.value.code == 404


def test_disconnect_forgets_a_peer_and_connect_gives_a_new_id(pair):
    d, p = pair["decode"], pair["prefill"]
    assert d.connect("127.0.0.1", p.port) == pair["peer"]  # the same node: the same id
    d.disconnect(pair["peer"])
    with pytest.raises(kvferry.Error) as gone:
        d.disconnect(pair["peer"])
    assert gone.value.code == "not_connected"
    refused = d.receive("after", pair["peer"], [(pair["dst_region"], 0, BLOCK)])
    assert refused.result["code"] == "not_connected"
    assert d.connect("127.0.0.1", p.port) != pair["peer"]


def test_a_layer_wise_send_streams_layers_as_they_are_marked_ready(pair):
    p, d = pair["prefill"], pair["decode"]
    r, r2 = pair["src_region"], pair["dst_region"]
    # Three layers of two blocks each, offered before any layer is "computed".
    sent = p.send("layered", [(r, i * BLOCK, BLOCK) for i in range(6)], layers=[2, 2, 2])
    got = d.receive("layered", pair["peer"], [(r2, i * BLOCK, BLOCK) for i in range(6)])
    assert not got.wait_layer(0, 0.0)
    p.layer_ready("layered", 1)
    assert got.wait_layer(1, 20.0)
    assert got.layers_landed == 1 and got.result is None
    assert np.array_equal(pair["dst"][2 * BLOCK:4 * BLOCK], pair["src"][2 * BLOCK:4 * BLOCK])
    assert not pair["dst"][:2 * BLOCK].any()
    with pytest.raises(kvferry.Error) as twice:
        p.layer_ready("layered", 1)
    assert twice.value.code == "invalid_argument"
    with pytest.raises(kvferry.Error) as past:
        p.layer_ready("layered", 3)
    assert past.value.code == "out_of_range"
    p.layer_ready("layered", 0)
    p.layer_ready("layered", 2)
    result = got.wait(20.0)
    assert result is not None and result["status"] == "succeeded", result
    assert np.array_equal(pair["dst"][:6 * BLOCK], pair["src"][:6 * BLOCK])
    assert sent.wait_released(20.0) and got.wait_released(20.0)
    events = [e for e in d.poll() if e["request_id"] == "layered"]
    landed = [e["layer"] for e in events if e["kind"] == "layer_landed"]
    assert landed[0] == 1 and sorted(landed) == [0, 1, 2]
    assert all(e["layers"] == 3 for e in events if e["kind"] == "layer_landed")
    assert [e["kind"] for e in events][-2:] == ["completed", "released"]
    bad = p.send("bad-layers", [(r, 8 * BLOCK, BLOCK)], layers=[2])
    assert bad.result["code"] == "invalid_argument"


def test_device_memory_is_refused_without_a_device_and_moves_with_an_emulated_one():
    kv = (np.arange(8 * BLOCK) % 253).astype(np.uint8)
    with kvferry.Node({"device": "none"}) as plain:
        with pytest.raises(kvferry.Error) as refused:
            plain.register(kv, kind="cuda")
        assert refused.value.code == "unsupported" and '"none"' in refused.value.message
        # A tensor that lives on a GPU is device memory whatever kind is asked for.
        on_gpu = FakeTensor(kv)
        on_gpu.is_cuda = True
        with pytest.raises(ValueError):
            plain.register(on_gpu, kind="host")
        with pytest.raises(kvferry.Error) as by_itself:
            plain.register(on_gpu)
        assert by_itself.value.code == "unsupported"
    with kvferry.Node({"transport": "tcp", "device": "emulated"}) as prefill, \
            kvferry.Node({"transport": "tcp", "device": "emulated"}) as decode:
        dst = np.zeros(8 * BLOCK, dtype=np.uint8)
        src_region = prefill.register(kv, kind="cuda")
        dst_region = decode.register(dst, kind="cuda")
        peer = decode.connect("127.0.0.1", prefill.port)
        sent = prefill.send("dev", [(src_region, 0, 4 * BLOCK)])
        got = decode.receive("dev", peer, [(dst_region, 4 * BLOCK, 4 * BLOCK)])
        result = got.wait(20.0)
        assert result["status"] == "succeeded", result
        assert " am" in result["transport"], result  # device memory takes data messages
        assert np.array_equal(dst[4 * BLOCK:], kv[:4 * BLOCK])
        assert not dst[:4 * BLOCK].any()
        assert sent.wait_released(20.0) and got.wait_released(20.0)
