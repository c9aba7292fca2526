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


def fnv1a(data, h):
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


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
        open(path, "wb").write(out + struct.pack("<Q", fnv1a(out, KILN_BASIS)))

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
        return out + struct.pack("<Q", fnv1a(out, PLAN_BASIS))
