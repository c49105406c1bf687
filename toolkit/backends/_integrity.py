"""A CRC-32 trailer on stored payloads: storage corruption reads as a miss, never as other data.

It detects accidents (a flipped byte, a truncated write), not forgery: whoever can write the
store can write a valid trailer, and the safe serializer is what keeps such bytes harmless.
"""

from __future__ import annotations

import zlib

from toolkit.errors import SerializationError

# CRC-32 of any message followed by its own little-endian CRC is this constant, so a check
# needs no slicing.
RESIDUE = 0x2144DF1C
TRAILER = 4


def seal(payload: bytes) -> bytes:
    """Append the CRC-32 trailer to ``payload``."""
    return payload + zlib.crc32(payload).to_bytes(TRAILER, "little")


def unseal(blob: bytes) -> bytes:
    """Return the payload of a sealed ``blob``; raise ``SerializationError`` if it is damaged."""
    if len(blob) < TRAILER or zlib.crc32(blob) != RESIDUE:
        raise SerializationError("stored value failed its integrity check (corrupt or foreign)")
    return blob[:-TRAILER]
