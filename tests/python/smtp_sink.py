"""An SMTP sink for tests/tests/e2e/alerts.rs: accepts every mail on
127.0.0.1:PORT (no TLS, no login) and writes each as DIR/<n>.eml with the
envelope in DIR/<n>.env; runs until its standard input closes."""
import sys
import time
from pathlib import Path

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out: Path):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        tmp = self.out / f"{self.n}.tmp"
        tmp.write_bytes(envelope.original_content or envelope.content)
        (self.out / f"{self.n}.env").write_text(
            f"from {envelope.mail_from}\nto {' '.join(envelope.rcpt_tos)}\n"
        )
        tmp.rename(self.out / f"{self.n}.eml")
        return "250 OK"


def main():
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port)
    controller.start()
    (out / "ready").write_text("ready\n")
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
