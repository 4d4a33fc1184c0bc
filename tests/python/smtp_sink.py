"""An SMTP sink for tests/tests/e2e/alerts.rs: accepts mail on
127.0.0.1:PORT and writes each as DIR/<n>.eml with the envelope in
DIR/<n>.env; runs until its standard input closes.

python3 smtp_sink.py PORT DIR [CERT KEY USER]: with the last three, STARTTLS
(CERT/KEY) is required and so is a login as USER with the password in the
environment variable SMTP_SINK_PASSWORD; each login attempt is recorded in
DIR/logins."""
import os
import ssl
import sys
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


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
            f"tls {session.ssl is not None}\nlogin {session.authenticated}\n"
        )
        tmp.rename(self.out / f"{self.n}.eml")
        return "250 OK"


class Login:
    def __init__(self, out: Path, user: str, password: str):
        self.out, self.user, self.password = out, user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        with open(self.out / "logins", "a") as f:
            f.write(f"{mechanism} {'ok' if ok else 'refused'}\n")
        return AuthResult(success=ok)


def main():
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    kwargs = {}
    if len(sys.argv) == 6:
        cert, key, user = sys.argv[3:6]
        password = os.environ["SMTP_SINK_PASSWORD"]
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        kwargs = dict(
            tls_context=ctx,
            require_starttls=True,
            authenticator=Login(out, user, password),
            auth_require_tls=True,
            auth_required=True,
        )
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    (out / "ready").write_text("ready\n")
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
