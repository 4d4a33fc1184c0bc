"""The signature check of docs/alerts.md, as a receiver would write it:
python3 webhook_verify.py KEY_FILE SIGNATURE_HEADER < BODY; exit 0 when the
header is a valid HMAC-SHA256 of "<t>.<body>" under the key."""
import hashlib
import hmac
import sys


def verify(key: bytes, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(","))
    t = int(fields["t"])
    if abs(now - t) > tolerance:
        return False  # replayed or clock skew
    expected = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


if __name__ == "__main__":
    import time

    key = open(sys.argv[1], "rb").read().rstrip(b"\r\n")
    ok = verify(key, sys.argv[2], sys.stdin.buffer.read(), int(time.time()))
    sys.exit(0 if ok else 1)
