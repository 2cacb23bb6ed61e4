"""Step-up: signing an approval or an override in the console asks for a fresh second factor.

A session is *stepped up* for `ICA_STEP_UP_MINUTES` (default 5) after a TOTP code: the one
given at sign-in, or one given on the step-up page (`/ui/stepup`). A recovery code signs in
but does not step up. A signing route declares the dependency:

    @router.post("/approvals/{approval_id}/sign",
                 dependencies=[Depends(read_form), Depends(login_redirect), StepUp])

and a browser whose session has no fresh second factor is sent (303) to the step-up page,
which returns to the form's `next` field (a console path, e.g. `/approvals/7`) or, for a GET,
to the page itself: the signing form is shown again, never re-posted. Or a route asks
`has_fresh_second_factor(request, ctx)` and renders its own sentence. Callers with a bearer
credential (a personal token, an Entra ID user token, an API key) are not browser sessions:
the check does not apply to them (the API's own rules do).
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from azdev_ica.api.deps import Ctx
from azdev_ica.api.routes.ui import HOME, safe_next
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.enrolment import stepped_up_since
from azdev_ica.web.render import redirect

STEP_UP_PATH = "/ui/stepup"


def _window(request: Request) -> timedelta:
    return timedelta(minutes=request.app.state.settings.step_up_minutes)


def has_fresh_second_factor(request: Request, ctx: ServiceContext) -> bool:
    """True when the request is not a browser session, or its session gave a TOTP code
    within the step-up window. Call after the route's permission (which reads the session)."""
    signed_in = getattr(request.state, "web_session", None)
    if signed_in is None:
        return True
    return stepped_up_since(ctx, signed_in.session_id, ctx.clock.now() - _window(request))


def step_up_location(return_to: str | None) -> str:
    return f"{STEP_UP_PATH}?next={quote(safe_next(return_to), safe='/')}"


class StepUpRequired(Exception):
    def __init__(self, return_to: str) -> None:
        super().__init__(return_to)
        self.return_to = return_to


def require_fresh_second_factor(request: Request, ctx: Ctx) -> None:
    """The dependency (`StepUp`): declare it after the permission and `read_form`."""
    if has_fresh_second_factor(request, ctx):
        return
    if request.method == "GET":
        return_to = request.url.path
    else:
        form: dict[str, str] = getattr(request.state, "form", {})
        return_to = form.get("next") or HOME
    raise StepUpRequired(return_to)


StepUp = Depends(require_fresh_second_factor)


def _to_step_up(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StepUpRequired)
    return redirect(step_up_location(exc.return_to))


def install_step_up(app: FastAPI) -> None:
    app.add_exception_handler(StepUpRequired, _to_step_up)
