#!/usr/bin/env python3
"""Regenerate fuzz/seeds/ from the committed test vectors and example configs.

Run from the repository root: python3 fuzz/make_seeds.py. The seeds are committed; this script
only documents (and reproduces) where each one comes from. Input layouts follow the targets in
fuzz/fuzz_targets/ and the keys in fuzz/src/lib.rs.
"""
import hashlib, json, os, shutil, struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
NATIVE_SECRET = "dJYYlhX3RrNpzmjFAuy2ZVbjV73CR81fz2u41iCAIJQ="
KEY_A = "oQIY1T7kis/kyV9QHh/Fe2cpnA0SvOAy995h7HWCMvE="


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def lines(path):
    with open(os.path.join(ROOT, path)) as f:
        return [json.loads(l) for l in f if l.strip()]


def ipv4_udp(payload):
    udp = struct.pack(">HHHH", 40000, 62201, 8 + len(payload), 0) + payload
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                      bytes([192, 0, 2, 7]), bytes([192, 0, 2, 1]))
    return hdr + udp


def ipv6_udp(payload):
    udp = struct.pack(">HHHH", 40000, 62201, 8 + len(payload), 0) + payload
    src = bytes.fromhex("20010db8000000000000000000000007")
    dst = bytes.fromhex("20010db8000000000000000000000001")
    return struct.pack(">IHBB", 0x60000000, len(udp), 17, 64) + src + dst + udp


if os.path.isdir(SEEDS):
    shutil.rmtree(SEEDS)

native = [v for v in lines("tests/vectors/native.jsonl")]
ok_native = [v for v in native if v["expect"] == "ok" and v["secret"] == NATIVE_SECRET]
for v in native[:12]:
    put("native_open", v["name"], bytes.fromhex(v["packet"]))
for v in ok_native[:3]:
    p = bytes.fromhex(v["packet"])
    put("ip_parse", "v4-" + v["name"], ipv4_udp(p))
    put("ip_parse", "v6-" + v["name"], ipv6_udp(p))
    put("engine", v["name"], bytes([0, 192, 0, 2, 7]) + p)

# Native plaintexts (docs/PROTOCOL.md, "Plaintext"): source address, one IPv4 allow IP with two
# accesses, one IPv6 allow IP.
def native_pt(ts, timeout, family, addr, accesses):
    pt = struct.pack(">QIB", ts, timeout, family) + addr.ljust(16, b"\0")
    pt += bytes([len(accesses)]) + b"".join(struct.pack(">BH", p, port) for p, port in accesses)
    return pt.ljust(91, b"\0")
put("native_plaintext", "source-tcp22", native_pt(1760000000, 0, 0, b"", [(6, 22)]))
put("native_plaintext", "v4-two", native_pt(1760000030, 300, 4, bytes([192, 0, 2, 10]), [(6, 22), (17, 53)]))
put("native_plaintext", "v6", native_pt(1760000000, 0, 6, bytes.fromhex("20010db8000000000000000000000005"), [(6, 443)]))

# fwknop: selector byte = index of the vector's key in fuzz/src/lib.rs fwknop_keys().
def selector(v):
    mode, kb, hk = v["encryption_mode"], v["key_base64"], v["hmac_key_base64"]
    if kb == KEY_A and mode == "CBC":
        return 0
    if kb == KEY_A and mode == "CTR":
        return 1
    if v.get("key_passphrase") == "fwknoptest" and v.get("hmac_key_passphrase") == "hmactest":
        return 2
    if v.get("key_passphrase") == "fwknoptest" and not hk:
        return 3 if mode == "CBC" else 4
    if v.get("key_passphrase") == "asdfasdf":
        return 5
    return None

for v in lines("tests/vectors/fwknop-vectors.jsonl"):
    s = selector(v)
    if s is None:
        continue
    p = v["packet"].encode()
    put("fwknop_open", v["case"], bytes([s]) + p)
    if s == 0 and v["valid"] and v["case"].startswith("default"):
        put("engine", "fwknop-" + v["case"], bytes([1, 10, 1, 2, 3]) + p)

# Configs: the examples and the engine target's own config.
put("config_server", "server.toml", open(os.path.join(ROOT, "examples", "server.toml"), "rb").read())
put("config_client", "client.toml", open(os.path.join(ROOT, "examples", "client.toml"), "rb").read())
lib = open(os.path.join(ROOT, "fuzz", "src", "lib.rs")).read()
engine_cfg = lib.split('pub const ENGINE_CONFIG: &str = r#"', 1)[1].split('"#;', 1)[0]
put("config_server", "engine.toml", engine_cfg.encode())

# A replay journal (src/replay.rs): header "NFKR" ‖ version 1 ‖ reserved, then records
# key[16] ‖ expires_at u64 BE ‖ SHA-256(key ‖ expires_at)[..8]. One live, one expired record,
# and a torn tail.
def record(key, exp):
    e = struct.pack(">Q", exp)
    return key + e + hashlib.sha256(key + e).digest()[:8]
hdr = b"NFKR" + struct.pack(">H", 1) + b"\0\0"
live, old = hashlib.sha256(b"live").digest()[:16], hashlib.sha256(b"old").digest()[:16]
put("replay_decode", "two-records", hdr + record(live, 1760000120) + record(old, 1759999000))
put("replay_decode", "torn-tail", hdr + record(live, 1760000120) + record(old, 1760000300)[:20])
put("replay_decode", "empty", hdr)

# The fwknop importer: the fixtures of tests/import_fwknop.rs (access.conf files and a
# fwknopd.conf).
fixtures = os.path.join(ROOT, "tests", "fixtures", "fwknop")
for name in sorted(os.listdir(fixtures)):
    if name.endswith(".conf"):
        put("fwknop_import", name, open(os.path.join(fixtures, name), "rb").read())
