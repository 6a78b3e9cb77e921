"""Bearer tokens, admin routes and read-only mode for every route of the server (docs/server_security.md).

`AuthMiddleware` wraps MONAI Label's whole FastAPI app (`medvl.server.asgi`), so it guards
MONAI Label's own routes, ours, `/docs` and `/openapi.json` alike. Its configuration comes
from the environment of the server process (not argv, which `ps` shows); `medvl serve` sets it:

- `MEDVL_TOKEN`: every request needs `Authorization: Bearer <token>` (or the admin token);
  unset -> no token asked, which only a loopback listener may be (others get 403).
- `MEDVL_ADMIN_TOKEN`: the token of the routes in `ADMIN_ROUTES` (delete, dataset download,
  logs, train, model files, batch infer, overwriting a `final` label, `save_label` in /infer).
  With `MEDVL_TOKEN` set and no admin token, those routes are off.
- `MEDVL_READ_ONLY=1`: `ADMIN_ROUTES` and `WRITE_ROUTES` (anything that writes the
  datastore) are refused for everyone; inference still runs.

Checks run in this order: read-only (403), token (401: none or wrong), admin (403).
A refusal is JSON `{"detail": "<one line naming the fix>"}`. Tokens are compared with
`hmac.compare_digest`. MONAI Label's own Keycloak mode (`MONAI_LABEL_AUTH_ENABLE`) uses the
same header for its JWTs; with it on, the token checks here are off (read-only stays).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

TOKEN_ENV, ADMIN_TOKEN_ENV = "MEDVL_TOKEN", "MEDVL_ADMIN_TOKEN"
READ_ONLY_ENV, CORS_ENV = "MEDVL_READ_ONLY", "MEDVL_CORS_ORIGINS"  # CORS: comma-separated origins
KEYCLOAK_ENV = "MONAI_LABEL_AUTH_ENABLE"
SCOPE_KEY = "medvl.auth"  # the request's role ("admin", "user" or "open"), read by check_save_label
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Rule:
    """One guarded route: `method` ("*" = any) and `path`, matched exactly or, with a trailing
    "*", as a prefix; `final_only`: only when the request would overwrite a `final` label."""

    method: str
    path: str
    why: str  # what the route does, shown in the refusal
    final_only: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method) and not (self.method == "GET" and method == "HEAD"):
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path.rstrip("/") == self.path.rstrip("/")


# Need the admin token; refused in read-only mode. MONAI Label marks each of its RBAC-admin
# routes the same way (tests/server/test_auth.py checks the two lists agree).
ADMIN_ROUTES: tuple[Rule, ...] = (
    Rule("DELETE", "/datastore/*", "deletes images or labels"),
    Rule("GET", "/datastore/dataset", "downloads the whole dataset"),
    Rule("PUT", "/datastore/label", "overwrites a final label", final_only=True),
    Rule("*", "/logs*", "shows the server's logs"),
    Rule("POST", "/train*", "starts training"),
    Rule("DELETE", "/train*", "stops training"),
    Rule("*", "/model/*", "reads or replaces model weights"),
    Rule("POST", "/batch/infer/*", "runs batch inference and saves its labels"),
    Rule("DELETE", "/batch/infer*", "stops batch inference"),
    Rule("POST", "/reload", "reloads the app"),
)
# Write the datastore: any token may, read-only mode refuses them.
WRITE_ROUTES: tuple[Rule, ...] = (
    Rule("PUT", "/datastore/*", "writes the datastore"),
    Rule("POST", "/scoring*", "runs scoring tasks"),
)
SAVE_LABEL_WHY = "saves the result as a label (save_label in /infer params)"


@dataclass(frozen=True)
class Policy:
    token: str = ""  # "" -> no token asked
    admin_token: str = ""  # "" -> admin routes open when token is "", else off
    read_only: bool = False
    keycloak: bool = False  # MONAI Label's own auth is on: it checks the Authorization header

    @classmethod
    def from_env(cls, environ=None) -> "Policy":
        env = os.environ if environ is None else environ
        return cls(token=env.get(TOKEN_ENV, ""), admin_token=env.get(ADMIN_TOKEN_ENV, ""),
                   read_only=_truthy(env.get(READ_ONLY_ENV, "")), keycloak=_truthy(env.get(KEYCLOAK_ENV, "")))

    def describe(self) -> str:
        """One line for the log, tokens not shown."""
        if self.keycloak:
            parts = ["MONAI Label's Keycloak auth (MONAI_LABEL_AUTH_ENABLE)"]
        else:
            parts = ["token required" if self.token else "no token (loopback only)",
                     "admin token set" if self.admin_token else
                     ("admin routes off" if self.token else "admin routes open")]
        return "; ".join(parts + (["read-only"] if self.read_only else []))

    def role(self, bearer: str) -> Optional[str]:
        """ "admin", "user", "open" (no token configured), or None (a token is needed and `bearer` is not one)."""
        if self.keycloak:
            return "open"
        if self.admin_token and _same(bearer, self.admin_token):
            return "admin"
        if not self.token:
            return "open"
        return "user" if _same(bearer, self.token) else None

    def decide(self, method: str, path: str, bearer: str, local: bool = True,
               final_exists: Callable[[], bool] = lambda: True) -> tuple[int, str, str]:
        """(status, detail, role): status 0 -> let the request through as `role`.

        `local`: the request reached a loopback address. `final_exists()`: for PUT
        /datastore/label with tag final, whether that image already has a final label."""
        admin = next((r for r in ADMIN_ROUTES if r.matches(method, path)), None)
        if admin is not None and admin.final_only and not final_exists():
            admin = None  # a first final label is a plain write
        write = admin or next((r for r in WRITE_ROUTES if r.matches(method, path)), None)
        if self.read_only and write is not None:
            return 403, f"server is read-only: {method} {path} {write.why}; restart medvl serve without --read-only", ""
        role = self.role(bearer)
        if role is None:
            said = "a wrong token" if bearer else "no token"
            return 401, (f"{said} for {method} {path}: send Authorization: Bearer <token> with the token printed by "
                         "medvl serve (or set MEDVL_TOKEN for the medvl clients)"), ""
        if role == "open" and not local and not self.keycloak:
            return 403, ("this server is reachable beyond loopback without a token: start it with medvl serve (which "
                         "generates one) or set MEDVL_TOKEN"), ""
        if admin is not None:
            refused = self.refuse_admin(role, f"{method} {path}", admin.why)
            if refused:
                return 403, refused, ""
        return 0, "", role

    def refuse_admin(self, role: str, what: str, why: str) -> str:
        """"" when `role` may use an admin route, else the one-line reason."""
        if self.read_only:
            return f"server is read-only: {what} {why}; restart medvl serve without --read-only"
        if role == "admin" or (role == "open" and not self.token and not self.admin_token) or self.keycloak:
            return ""
        if not self.admin_token:
            return f"{what} {why}, an admin route, which is off: restart medvl serve with --admin-token"
        return f"{what} {why}, an admin route: send Authorization: Bearer <admin token> printed by medvl serve"


def check_save_label(scope: dict, params: dict, policy: Optional[Policy] = None) -> None:
    """Raise HTTPException 403 when /infer `params` ask to save the label and the request's role may not."""
    if not _truthy(params.get("save_label", False)):
        return
    policy = policy or Policy.from_env()
    refused = policy.refuse_admin(scope.get(SCOPE_KEY, "open"), "save_label", SAVE_LABEL_WHY)
    if refused:
        from fastapi import HTTPException

        raise HTTPException(403, refused)


def cors_origins(environ=None) -> list[str]:
    """Origins allowed cross-origin requests: MEDVL_CORS_ORIGINS, else MONAI Label's own setting, else none."""
    env = os.environ if environ is None else environ
    mine = [o.strip().rstrip("/") for o in env.get(CORS_ENV, "").split(",") if o.strip()]
    if mine:
        return mine
    raw = env.get("MONAI_LABEL_CORS_ORIGINS", "").strip()
    if not raw:
        return []
    try:
        listed = json.loads(raw)
    except ValueError:
        listed = raw.split(",")
    return [str(o).strip().rstrip("/") for o in listed if str(o).strip()]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (hosts nobody else can reach)."""
    host = (host or "").strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthMiddleware:
    """Pure ASGI middleware applying a `Policy` to every HTTP request (see the module docstring)."""

    def __init__(self, app, policy: Optional[Policy] = None, final_exists: Optional[Callable[[str], bool]] = None):
        self.app = app
        self.policy = policy or Policy.from_env()
        self.final_exists = final_exists or _final_label_exists

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        server = scope.get("server") or ("127.0.0.1", None)
        local = server[1] is None or is_loopback(str(server[0]))  # port None: a unix socket
        status, detail, role = self.policy.decide(method, path, _bearer(scope), local,
                                                  lambda: self.final_exists(_query(scope, "image")) if
                                                  (_query(scope, "tag") or "final") == "final" else False)
        if status:
            logger.info("%s %s -> %d %s", method, path, status, detail)
            return await _refuse(send, status, detail)
        scope[SCOPE_KEY] = role
        await self.app(scope, receive, send)


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bearer(scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def _query(scope, name: str) -> str:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[-1] if values else ""


def _final_label_exists(image: str) -> bool:
    """Whether the datastore holds a final label of `image` (unsure -> True: ask for admin)."""
    try:
        from monailabel.interfaces.utils.app import app_instance

        return bool(app_instance().datastore().get_label_by_image_id(image, "final"))
    except Exception:  # noqa: BLE001 - no app yet or odd datastore: take the safe answer
        return True


def _same(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def _truthy(value) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def access_env(host: str, token: str = "", admin_token: str = "", read_only: bool = False, cors=(),
               environ=None) -> tuple[dict, list[str]]:
    """(environment for the server process, lines to print once) for `medvl serve`'s access flags.

    Empty `token` / `admin_token` fall back to MEDVL_TOKEN / MEDVL_ADMIN_TOKEN of `environ`.
    Off loopback both are required: the missing ones are generated (`secrets.token_urlsafe`)
    and printed. On loopback nothing is generated: no token, as before.
    """
    import secrets

    env = os.environ if environ is None else environ
    token, admin_token = token or env.get(TOKEN_ENV, ""), admin_token or env.get(ADMIN_TOKEN_ENV, "")
    if token and admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        from medvl.server.settings import ConfigError

        raise ConfigError("--token and --admin-token are the same: give the admin token a different value")
    lines = []
    if _truthy(env.get(KEYCLOAK_ENV, "")):
        if token or admin_token:
            from medvl.server.settings import ConfigError

            raise ConfigError(f"{KEYCLOAK_ENV} is on (MONAI Label's Keycloak auth): drop --token/--admin-token, or "
                              f"unset {KEYCLOAK_ENV} to use medvl tokens")
        lines.append("access: MONAI Label's Keycloak auth (MONAI_LABEL_AUTH_ENABLE); medvl tokens off")
    elif not is_loopback(host):
        if not token:
            token = secrets.token_urlsafe(32)
            lines.append(f"token (send Authorization: Bearer <token>): {token}")
        if not admin_token:
            admin_token = secrets.token_urlsafe(32)
            lines.append(f"admin token (delete, dataset, logs, overwriting final labels): {admin_token}")
    out = {TOKEN_ENV: token, ADMIN_TOKEN_ENV: admin_token, READ_ONLY_ENV: "1" if read_only else "",
           CORS_ENV: ",".join(o.rstrip("/") for o in cors)}
    if read_only:
        lines.append("read-only: deletes, label saves and other datastore writes are refused")
    return out, lines
