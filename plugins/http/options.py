"""The ``http`` service's options (``-c http-KEY=VALUE``)."""

from __future__ import annotations

from framelens import CommaList, Field, Options

__all__ = ["HttpOptions"]

MIB = 1024 * 1024


class HttpOptions(Options):
    """Where the API listens, which backend answers, and the limits that keep it safe.

    Defaults are safe for a machine on a shared network: loopback only, no CORS,
    no fetching from private addresses, no ``file://`` URLs.
    """

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 exposes the API on every interface")
    port: int = Field(9000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    backend: str | None = Field(None, description="VLM backend that answers (ollama, nim, openai, ...;"
                                " default: the run's --backend, else ollama)")
    api_key: str | None = Field(
        None, description="Require 'Authorization: Bearer KEY' (default: $FRAMELENS_API_KEY, else no key)"
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="Origins allowed to call the API from a browser (* for any); empty = CORS off"
    )
    max_concurrency: int = Field(256, ge=1, le=4096, description="Backend requests running at once (the backend's"
                                 " pool bounds each server itself: -c BACKEND-max-in-flight)")
    max_queue: int = Field(1024, ge=0, le=100000, description="Requests waiting for a slot; more get 429")
    queue_timeout: float = Field(30.0, gt=0, description="Seconds a request may wait for a slot before 429")
    request_timeout: float = Field(300.0, gt=0, description="Seconds a backend call may take before 504")
    max_body_bytes: int = Field(64 * MIB, ge=1024, description="Largest request body (413 above)")
    max_image_bytes: int = Field(20 * MIB, ge=1024, description="Largest image, inline or fetched (413 above)")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest image in pixels, width x height (413 above)")
    max_images: int = Field(16, ge=1, description="Images (video frames included) in one request (400 above)")
    max_video_bytes: int = Field(200 * MIB, ge=1024, description="Largest video, inline or fetched (413 above)")
    max_video_frames: int = Field(32, ge=1, le=1024, description="Most frames sampled from one video_url")
    video_fps: float = Field(2.0, gt=0, le=120, description="Sampling rate for video_url when the request sets none")
    live_video_seconds: float = Field(
        2.0, gt=0, le=60, description="Seconds of a live source sampled by a video_url that gives only fps"
    )
    fetch_timeout: float = Field(10.0, gt=0, description="Seconds to download an http(s) image or video URL")
    max_redirects: int = Field(3, ge=0, le=20, description="Redirects followed when downloading a URL")
    allow_private_urls: bool = Field(
        False, description="Allow image, video and live-source URLs (http, rtsp, rtsps) on loopback, private and"
        " link-local addresses (SSRF risk)"
    )
    allowed_file_dirs: CommaList = Field(
        default_factory=list, description="Directories that file:// URLs may read from; empty = file:// refused"
    )
    open_sources: bool = Field(
        True, description="Let requests open live sources (v4l2://, csi://, rtsp://); false = only stream://ID"
    )
    first_frame_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a new live source's first frame")
    open_timeout: float = Field(10.0, gt=0, le=300, description="Seconds a request may spend opening a live source"
                                " (any scheme) before it gets the uniform 422")
    max_opens: int = Field(8, ge=1, le=256, description="Live-source opens running at once for all clients; more"
                           " get 429 with Retry-After")
    max_opens_per_client: int = Field(2, ge=1, le=256, description="Live-source opens running at once for one"
                                      " client address; more get 429 with Retry-After")
