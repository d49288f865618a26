#!/usr/bin/env python3
"""Writes seed inputs for the frame_decode fuzz target: one valid CRC32C
frame of each kind, so the fuzzer starts past the integrity check."""
import os
import struct

POLY = 0x82F63B78
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def frame(kind, transfer, block, shard, payload):
    head = b"WEIR" + bytes([1, kind, 0, 0]) + struct.pack(
        "<QQQIHH", 0x1122334455667788, 7, transfer, block, shard, len(payload)
    )
    return head + payload + struct.pack("<I", crc32c(head + payload))


out = os.path.join(os.path.dirname(__file__), "seeds", "frame_decode")
seeds = {
    "data": frame(1, 9, 3, 2, bytes(range(64))),
    "parity": frame(2, 9, 3, 70, bytes(64)),
    "heartbeat": frame(4, 0, 0, 0, struct.pack("<QQIIQ", 10, 14000, 1, 1000, 9)),
    "end_of_pass": frame(5, 9, 0, 0, struct.pack("<II", 0, 2)),
    "empty_descriptor": frame(3, 9, 0, 0, b""),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
