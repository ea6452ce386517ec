"""The dashboard's options: ``-c dashboard-KEY=VALUE`` (declared with ``register_plugin_options``)."""

from __future__ import annotations

from framelens import Field, Options

__all__ = ["DashboardOptions"]


class DashboardOptions(Options):
    """Settings of the browser dashboard served by the ``http`` service."""

    enabled: bool = Field(True, description="Serve the dashboard at / of the http service"
                                            " (false: the plain list of streams)")
    max_fps: float = Field(10.0, gt=0, le=60, description="Most frames per second sent to each live view")
    quality: int = Field(70, ge=10, le=100, description="JPEG quality of the live views")
    max_side: int = Field(960, ge=64, le=4096, description="Longest side of live-view frames, in pixels")
    history: int = Field(1000, ge=10, le=100_000, description="Events kept for /v1/events clients that reconnect")
    client_queue: int = Field(2000, ge=10, le=100_000,
                              description="Events queued per /v1/events client before it is made to reconnect")
