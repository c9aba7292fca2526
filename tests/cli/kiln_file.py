# Reads and rewrites .kiln files (and the engine plans inside them) for the hostile-file tests:
# edits go through the JSON description, and the sizes and checksums are recomputed so that the
# loader's own checks, not the checksum, are what a test exercises.
#
#   .kiln: "KILNPROG" | u32 version | u32 flags | u64 json | u64 blob | JSON | blob | u64 FNV-1a
#   plan:  "KILNPLAN" | u32 version | u32 48 | u64 json | u64 blob offset | u64 blob | u64 total |
#          JSON, padding, blob | u64 FNV-1a
import json
import struct


# FNV-1a 64; the .kiln container starts from 1469598103934665603 (the standard basis with its last
# digit missing, kept for compatibility), plans from the standard 14695981039346656037.
KILN_BASIS, PLAN_BASIS = 1469598103934665603, 14695981039346656037


M64 = 0xFFFFFFFFFFFFFFFF


def fnv1a(data, h):
    """Version 1 files' checksum."""
    for b in data:
        h = ((h ^ b) * 1099511628211) & M64
    return h


def _finalize(h):
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M64
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & M64
    return h ^ (h >> 33)


def checksum64(data):
    """Version 2 files' checksum (src/engine/checksum.cpp), written again here from its description:
    four lanes over 8-byte little-endian words, each (lane ^ word) * FNV's prime then ^= >> 29; the
    tail's bytes into lane i % 4; the length and the lanes through the finalizer."""
    lanes = [0xcbf29ce484222325, 0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f, 0x165667b19e3779f9]
    n = len(data)
    whole = n // 32 * 32
    for i in range(0, whole, 32):
        for k in range(4):
            w = int.from_bytes(data[i + 8 * k:i + 8 * k + 8], "little")
            v = ((lanes[k] ^ w) * 1099511628211) & M64
            lanes[k] = v ^ (v >> 29)
    for i in range(whole, n):
        lanes[i % 4] = ((lanes[i % 4] ^ data[i]) * 1099511628211) & M64
    h = _finalize(n)
    for lane in lanes:
        h = _finalize(h ^ _finalize(lane))
    return h


def checksum(version, data, fnv_basis):
    return fnv1a(data, fnv_basis) if version == 1 else checksum64(data)


class KilnFile:
    def __init__(self, path):
        d = open(path, "rb").read()
        assert d[:8] == b"KILNPROG", path
        self.version, self.flags, js, bs = struct.unpack_from("<IIQQ", d, 8)
        self.json = json.loads(d[32:32 + js])
        self.blob = bytearray(d[32 + js:32 + js + bs])

    def write(self, path, text=None):
        """`text` replaces the JSON verbatim (for descriptions json.dumps cannot produce)."""
        t = text.encode() if text is not None else json.dumps(self.json).encode()
        out = b"KILNPROG" + struct.pack("<IIQQ", self.version, self.flags, len(t), len(self.blob)) + t + bytes(self.blob)
        open(path, "wb").write(out + struct.pack("<Q", checksum(self.version, out, KILN_BASIS)))

    def node(self, name):
        return next(n for n in self.json["graph"] if n["name"] == name)

    # The plan of segment `i`, as a Plan; put_plan writes an edited one back (appended to the blob).
    def plan(self, i=0):
        off, ln = self.json["segments"][i]["plan"]
        return Plan(bytes(self.blob[off:off + ln]))

    def put_plan(self, i, plan, text=None):
        b = plan.bytes(text)
        off = (len(self.blob) + 63) // 64 * 64
        self.blob += bytes(off - len(self.blob)) + b
        self.json["segments"][i]["plan"] = [off, len(b)]


class Plan:
    def __init__(self, d):
        assert d[:8] == b"KILNPLAN"
        self.version = struct.unpack_from("<I", d, 8)[0]
        js, boff, bs, total = struct.unpack_from("<QQQQ", d, 16)
        self.json = json.loads(d[48:48 + js])
        self.blob = bytes(d[boff:boff + bs])

    def layer(self, name):
        return next(l for l in self.json["layers"] if l["name"] == name)

    def bytes(self, text=None):
        t = text.encode() if text is not None else json.dumps(self.json).encode()
        boff = (48 + len(t) + 63) // 64 * 64
        total = boff + len(self.blob) + 8
        out = b"KILNPLAN" + struct.pack("<IIQQQQ", self.version, 48, len(t), boff, len(self.blob), total)
        out += t + bytes(boff - 48 - len(t)) + self.blob
        return out + struct.pack("<Q", checksum(self.version, out, PLAN_BASIS))
