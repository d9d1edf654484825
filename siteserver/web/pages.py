"""What every admin page shares, on both roles: the templates, the answer's headers, reading a
posted form, the login behind the pages (the admin token typed once, then an HttpOnly,
SameSite=Strict cookie, Secure under TLS) and the login and logout routes."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from siteserver.admin.logins import AdminLogin
from siteserver.api.auth import is_admin_token
from siteserver.api.deps import services_of
from siteserver.api.errors import retry_after, status_of
from siteserver.domain import DomainError, format_cents
from siteserver.timeutil import parse_iso, utcnow

COOKIE = "siteserver_admin"
#: what every page answer says to the browser: never cached, never framed, no script, no
#: request elsewhere (the pages need none: server-rendered, inline style only)
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'",
}
#: a form has a handful of fields; more is not one of ours
MAX_FORM_FIELDS = 10


def age(secs: float | None) -> str:
    """12 -> '12 s', 300 -> '5 min', 7200 -> '2.0 h', 200000 -> '2.3 d' (for humans)."""
    if secs is None:
        return "never"
    if secs < 120:
        return f"{secs:.0f} s"
    if secs < 7200:
        return f"{secs / 60:.0f} min"
    if secs < 172800:
        return f"{secs / 3600:.1f} h"
    return f"{secs / 86400:.1f} d"


templates = jinja2.Environment(
    loader=jinja2.PackageLoader("siteserver.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
templates.filters["cents"] = format_cents
templates.filters["age"] = age
templates.filters["ago"] = lambda at: age((utcnow() - parse_iso(at)).total_seconds())


def role_name(request: Request) -> str:
    site = services_of(request).site_admin
    return f"site {site.site_id}" if site is not None else "primary"


def page(request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(template).render(role=role_name(request), **context)
    return HTMLResponse(html, status_code=code, headers=HEADERS)


def problem(request: Request, status: int, message: str, login: AdminLogin | None = None) -> HTMLResponse:
    """An error as a page: what went wrong in a sentence, and the way back."""
    return page(request, "problem.html.j2", status, message=message, login=login)


def refused(request: Request, exc: DomainError, login: AdminLogin | None) -> HTMLResponse:
    """A service's refusal (unknown, conflicting, unavailable) as a page with the API's status."""
    return problem(request, status_of(exc), exc.detail, login)


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers=HEADERS)


async def posted_form(request: Request) -> dict[str, str] | HTMLResponse:
    """A posted HTML form's fields (one value each), or the page that says why it is not one."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return problem(request, 415, "This address takes an HTML form (application/x-www-form-urlencoded).")
    try:
        fields = parse_qs(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        return problem(request, 400, "The form could not be read (not UTF-8, or too many fields).")
    return {k: v[-1] for k, v in fields.items()}


async def current_login(request: Request) -> AdminLogin | None:
    return services_of(request).admin_logins.get(request.cookies.get(COOKIE))


#: the admin's login of the request, None without one (the page then sends them to log in)
Login = Annotated[AdminLogin | None, Depends(current_login)]


async def checked_form(request: Request, login: AdminLogin | None) -> dict[str, str] | Response:
    """A form posted by a logged-in admin from one of our pages (its form key matches), or the
    answer to send instead: to the login page, or a refusal."""
    if login is None:
        return see_other("/admin/login")
    form = await posted_form(request)
    if isinstance(form, Response):
        return form
    if not login.form_key_matches(form.get("form_key")):
        return problem(
            request, 403, "This form did not come from this page: reload the page and try again.", login
        )
    return form


router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, login: Login) -> Response:
    if login is not None:
        return see_other("/admin")
    return page(request, "login.html.j2", login=None, error=None)


@router.post("/login", response_class=HTMLResponse)
async def log_in(request: Request) -> Response:
    form = await posted_form(request)
    if isinstance(form, Response):
        return form
    services = services_of(request)
    guesses = services.admin_logins.guesses
    address = [f"address:{request.client.host if request.client else '?'}"]
    wait = guesses.retry_after(address)
    if wait is not None:
        locked = page(
            request,
            "login.html.j2",
            429,
            login=None,
            error=f"Too many wrong tokens from this address: try again in {age(wait)}.",
        )
        locked.headers.update(retry_after(wait))
        return locked
    if not is_admin_token(services, form.get("token", "")):
        guesses.failure(address)
        return page(request, "login.html.j2", 401, login=None, error="That is not this server's admin token.")
    guesses.forgive(address)
    login = services.admin_logins.open()
    answer = see_other("/admin")
    answer.set_cookie(
        COOKIE,
        login.login_id,
        max_age=int(services.admin_logins.login_secs),
        path="/admin",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return answer


@router.post("/logout", response_class=HTMLResponse)
async def log_out(request: Request, login: Login) -> Response:
    form = await checked_form(request, login)
    if isinstance(form, Response):
        return form
    assert login is not None
    services_of(request).admin_logins.close(login.login_id)
    answer = see_other("/admin/login")
    answer.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="strict")
    return answer
