"""``dashboard``: the browser dashboard at ``/`` of the ``http`` service.

Live views of every open stream, what the model says, alert rules you can edit,
a chat with the camera and the service's status, updated by ``GET /v1/events``
(every bus event as Server-Sent Events). Static files, no build step, no CDN.

The plugin registers no component: its routes are mounted whenever the ``http``
service runs, and ``-c dashboard-enabled=false`` (declared through
``register_plugin_options``) leaves them out, so ``/`` is the plain list of
streams again. See docs/dashboard.md.
"""

from __future__ import annotations

from framelens import Context, RegisterPluginOptions, RouteRegister, hookimpl

from .options import DashboardOptions

__all__ = ["DashboardOptions", "register_plugin_options", "register_routes"]


@hookimpl
def register_plugin_options(register: RegisterPluginOptions) -> None:
    """``-c dashboard-enabled=false`` and the live-view settings."""
    register("dashboard", DashboardOptions, help="browser dashboard at / of the http service")


@hookimpl
def register_routes(register: RouteRegister, context: Context) -> None:
    """Mount the dashboard unless ``-c dashboard-enabled=false``."""
    try:
        options: DashboardOptions = context.plugin_options("dashboard")
    except KeyError:  # a registry built without this plugin's hooks (tests on a bare registry)
        options = DashboardOptions()
    if not options.enabled:
        return
    from .routes import add_dashboard_routes

    add_dashboard_routes(register, context, options)
