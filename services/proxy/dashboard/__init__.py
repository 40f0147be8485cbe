"""The web dashboard at /dashboard (Logs, Usage, Keys) served by the proxy; see routes.py and session.py."""

from services.proxy.dashboard.routes import add_dashboard, session_credential

__all__ = ["add_dashboard", "session_credential"]
