#!/usr/bin/env python3
"""Writes the audit log's golden vectors (Tests/AuditTests/Vectors/*.json) from an independent
implementation: Python's hashlib and json, and pyca/cryptography for Ed25519, following
RFC 8785, RFC 9162 §2.1 and the C2SP checkpoint / signed-note specifications directly.

The Swift code is tested against these files; this script is what a third-party verifier
would write. Run it only when the format changes (the output is committed).

    Scripts/audit-vectors.py
"""
import base64, hashlib, json, os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "AuditTests", "Vectors")


def sha(b): return hashlib.sha256(b).digest()
def leaf(d): return sha(b"\x00" + d)
def node(l, r): return sha(b"\x01" + l + r)


def split(n):
    k = 1
    while k * 2 < n: k *= 2
    return k


def mth(leaves):
    if not leaves: return sha(b"")
    if len(leaves) == 1: return leaf(leaves[0])
    k = split(len(leaves))
    return node(mth(leaves[:k]), mth(leaves[k:]))


def path(m, d):
    if len(d) == 1: return []
    k = split(len(d))
    return path(m, d[:k]) + [mth(d[k:])] if m < k else path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    n = len(d)
    if m == n: return [] if b else [mth(d)]
    k = split(n)
    return subproof(m, d[:k], b) + [mth(d[k:])] if m <= k else subproof(m - k, d[k:], False) + [mth(d[:k])]


def canonical(value):
    """RFC 8785 for values without fractions: keys sorted by UTF-16 code units."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-16-be"))
        return "{" + ",".join(canonical(k) + ":" + canonical(v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def hx(b): return b.hex()


def merkle_vectors():
    ct = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f"]]
    many = ct + [bytes([i, (i * 7) % 256]) for i in range(8, 37)]
    cases = {"leaves": [hx(d) for d in many], "leafHashes": [hx(leaf(d)) for d in many],
             "roots": [hx(mth(many[:n])) for n in range(len(many) + 1)], "inclusion": [], "consistency": []}
    for n in list(range(1, 10)) + [16, 17, 31, 32, 33, 37]:
        for m in range(n):
            cases["inclusion"].append({"index": m, "size": n, "proof": [hx(h) for h in path(m, many[:n])]})
    for n in list(range(1, 10)) + [17, 32, 37]:
        for m in range(1, n + 1):
            cases["consistency"].append({"old": m, "new": n, "proof": [hx(h) for h in subproof(m, many[:n], True)]})
    return cases


def canonical_vectors():
    inputs = [
        '{"b":1,"a":"x"}',
        '{"\\ufb01":0,"\\u20ac":1,"\\ud83d\\ude00":2,"\\u00e9":3,"a":4}',
        '{"text":"line\\nbreak\\ttab\\u0001\\u001f\\"q\\"\\\\ /\\u007f\\u2028"}',
        '[9007199254740991,-9007199254740991,0,-1,true,false,null]',
        '{"nested":{"z":[],"y":{},"x":[{"b":2,"a":1}]}}',
        '"\\u00e9t\\u00e9"',
    ]
    good = [{"input": s, "canonical": canonical(json.loads(s))} for s in inputs]
    bad = [' {"a":1}', '{"a":1} ', '{"b":1,"a":2}', '{"a":1,"a":2}', '{"a":01}', '{"a":1.0}', '{"a":1e3}',
           '{"a":-0}', '"\\u0041"', '"\\u000a"', '"\\u001F"', '"\\/"', '{"a" :1}', '[1,]', '"\x01"',
           '9007199254740992', '"\\ud83d\\ude00"', 'tru', '{"a":1,}']
    return {"valid": good, "invalid": [{"input": s} for s in bad]}


def record_vectors():
    records = [
        {"seq": 0, "time": "2026-11-29T09:00:00.000Z",
         "actor": {"type": "user", "id": "bootstrap", "auth": "bootstrap-bearer"},
         "operation": "tenant.create", "outcome": "success", "tenant": "acme", "requestId": "r-1", "client": "127.0.0.1"},
        {"seq": 1, "time": "2026-11-29T09:00:00.125Z",
         "actor": {"type": "system", "id": "prober", "auth": "internal"},
         "operation": "l1.probe", "outcome": "failure", "tenant": "acme", "keystore": "hsm",
         "key": "pkcs11:token=cmk-l1;object=tenant-root;type=secret-key", "mechanism": "CKM_AES_KEY_WRAP_PAD",
         "error": "permission_denied", "target": "5b0e-link", "latencyMicros": 2310,
         "details": {"check": "wrap", "\u00e9v\u00e9nement": "caf\u00e9 \u2603"}},
    ]
    return {"records": [{"record": r, "canonical": canonical(r), "leafHash": hx(leaf(canonical(r).encode()))} for r in records],
            "chain": hx(sha(b"\x02" + sha(b"\x02" + bytes(32) + leaf(canonical(records[0]).encode()))
                            + leaf(canonical(records[1]).encode())))}


def checkpoint_vectors():
    seed = bytes(range(32))
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes_raw()
    name = "openkcm.example/audit/vectors"
    key_hash = sha(name.encode() + b"\n" + b"\x01" + public)[:4]
    cases = []
    for size, root, time in [(0, sha(b""), "2026-11-29T09:00:00.000Z"),
                             (8, bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
                              "2026-11-29T09:00:10.500Z")]:
        body = f"{name}\n{size}\n{base64.b64encode(root).decode()}\ntime {time}\n"
        signature = key.sign(body.encode())
        note = body + "\n" + f"\u2014 {name} {base64.b64encode(key_hash + signature).decode()}\n"
        cases.append({"size": size, "root": hx(root), "time": time, "note": note})
    vkey = base64.b64encode(b"\x01" + public).decode()
    return {"seed": hx(seed), "name": name, "publicKey": hx(public),
            "verifierKey": f"{name}+{key_hash.hex()}+{vkey}",
            "privateKeyPEM": "-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(
                bytes.fromhex("302e020100300506032b657004220420") + seed).decode() + "\n-----END PRIVATE KEY-----\n",
            "checkpoints": cases}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in [("merkle", merkle_vectors()), ("canonical", canonical_vectors()),
                       ("records", record_vectors()), ("checkpoints", checkpoint_vectors())]:
        with open(os.path.join(OUT, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
    print("wrote", os.path.abspath(OUT), file=sys.stderr)


if __name__ == "__main__":
    main()
