"""The culler's status page: an ASGI app served by hypercorn on trio, behind the hub's OAuth; the whole hub for its
admins, each user's own servers and culls for that user.

See the README's "The status page". Imported only when the page is served, so a culler without one never
loads hypercorn, Starlette or Jinja2.
"""

from .._history import History
from ._app import create_app
from ._oauth import Identity, OAuthError, OAuthFlow
from ._server import serve_status_page
from ._settings import StatusPageSettings

__all__ = [
    "History",
    "Identity",
    "OAuthError",
    "OAuthFlow",
    "StatusPageSettings",
    "create_app",
    "serve_status_page",
]
