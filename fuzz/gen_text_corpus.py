#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_config and fuzz_protocol (small, real inputs).

fuzz_config input:   TOML text \\0 environment lines NAME=VALUE \\0 override lines key=value
fuzz_protocol input: one JSON line (or 0xFF + bytes for the encoder mode)
usage: fuzz/gen_text_corpus.py [CORPUS_ROOT]   (default: fuzz/corpus next to this script)
"""
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")


def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def config(toml, env=(), sets=()):
    return toml + "\0" + "\n".join(env) + "\0" + "\n".join(sets)


example = open(os.path.join(os.path.dirname(__file__), "..", "config", "kvferry.example.toml")).read()
write("fuzz_config", "example-file", config(example))
write("fuzz_config", "all-sources", config(
    'node_name = "prefill-0"\nrole = "prefill"\nlisten_port = 7000\ntransport = "tcp"\n'
    'staging_slots = 8\nstaging_slot_bytes = 1048576\nlayout_tag = "llama-7b/fp16"\n',
    ["KVFERRY_LISTEN_PORT=7001", "KVFERRY_LOG_LEVEL=info", "KVFERRY_CONFIG=/etc/kvferry.toml",
     "PATH=/usr/bin"],
    ["role=decode", "max_fetches_in_flight=64", "default_deadline_ms=0"]))
write("fuzz_config", "refused-range", config("listen_port = 70000\n"))
write("fuzz_config", "refused-type", config('staging_slots = "four"\ncancel_timeout_ms = 1.5\n'))
write("fuzz_config", "syntax-error", config('node_name = "unterminated\n[table]\nx = [1, 2\n'))
write("fuzz_config", "env-errors", config("", ["KVFERRY_STAGING_SLOTS=-1", "KVFERRY_NOPE=1"]))
write("fuzz_config", "set-errors", config("", [], ["progress_deadline_ms=99", "unknown_key=1",
                                                   "scheduler_threads=+4"]))
write("fuzz_config", "toml-features", config(
    '# comment\nnode_name = """multi\nline"""\nlisten_host = \'::1\'\n'
    'layout_tag = "t\\u00e9\\t"\nkeepalive_interval_ms = 0x10\nquarantine_budget = 1_000\n'
    '[nested]\nkey = 2000-01-01T00:00:00Z\n'))

lines = [
    ("ready", '{"msg":"ready","port":7000,"epoch":123,"role":"prefill"}'),
    ("offered", '{"msg":"offered","requests":16}'),
    ("offered-error", '{"msg":"offered","error":"bad_offer"}'),
    ("result", '{"msg":"result","requests":8,"succeeded":8,"failed":0,"bytes":4194304,'
               '"verified_bytes":4194304}'),
    ("report", '{"msg":"report","succeeded":8,"failed":1,"cancelled":0,"in_flight":2,'
               '"unreleased":0,"transports":["tcp","sysv"],"healthy":true}'),
    ("offer", '{"msg":"offer","requests":16,"layers":4,"block_bytes":65536,"seed":7}'),
    ("report-request", '{"msg":"report"}'),
    ("quit", '{"msg":"quit"}'),
    ("wrong-types", '{"msg":"ready","port":70000,"epoch":-1,"role":["x"],"extra":{"a":null}}'),
    ("not-an-object", '[1.5e300, "\\ud83d\\ude00", false]'),
]
for name, line in lines:
    write("fuzz_protocol", name, line)
# The encoder mode: 0xFF, then field bytes (strings with non-UTF-8 bytes among them).
write("fuzz_protocol", "encode", b"\xff" + bytes(range(0, 64)) + b"\xc3\x28tcp\xff\xfe" + bytes(64))
