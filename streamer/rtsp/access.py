"""Who may watch: gst-rtsp-server's own authentication (``RTSPAuth``) and TLS, from the settings.

With credentials configured every request needs them (digest by default, basic only when asked
for); with a certificate and key the server speaks RTSP over TLS and the media is sent only
interleaved in that connection (TCP), never as clear-text UDP.
"""

from __future__ import annotations

from streamer.config import Settings
from streamer.media.gst import Gio, GLib, GstRtsp, GstRtspServer

# Roles of the tokens RTSPAuth hands out (the "media.factory.role" of RTSPToken).
VIEWER_ROLE = "viewer"  # a user who gave the right credentials (or anyone, without auth)
ANONYMOUS_ROLE = "anonymous"  # no or wrong credentials while auth is on


class AccessError(Exception):
    """The TLS certificate or key cannot be used; the message says which and why."""


def _token(role: str) -> GstRtspServer.RTSPToken:
    token = GstRtspServer.RTSPToken()
    # set_string, not writable_structure().set_value: PyGObject hands out a copy of the latter.
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, role)
    return token


def _permissions(*roles: tuple[str, bool]) -> GstRtspServer.RTSPPermissions:
    """(role, may construct/play) for each role; every listed role may see the mount point.

    A role that may access but not construct the media gets 401 with a challenge (and so a
    client knows to send credentials); a role missing from the list would get 404.
    """
    permissions = GstRtspServer.RTSPPermissions()
    for role, allowed in roles:
        permissions.add_permission_for_role(role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role(role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, allowed)
    return permissions


def make_auth(settings: Settings) -> tuple[GstRtspServer.RTSPAuth, GstRtspServer.RTSPPermissions] | None:
    """gst-rtsp-server's authentication manager and the factory's permissions, or None when
    neither credentials nor TLS are configured (anyone may watch, as before).

    Without credentials but with TLS every client gets the viewer role by default: RTSPAuth is
    then only there to carry the certificate. Raises AccessError for an unusable certificate.
    """
    if not settings.rtsp_auth and not settings.rtsp_tls:
        return None
    auth = GstRtspServer.RTSPAuth()
    if settings.rtsp_tls:
        try:
            certificate = Gio.TlsCertificate.new_from_files(
                str(settings.rtsp_tls_cert), str(settings.rtsp_tls_key)
            )
        except GLib.Error as err:
            raise AccessError(
                f"RTSP_TLS_CERT={str(settings.rtsp_tls_cert)!r} / RTSP_TLS_KEY="
                f"{str(settings.rtsp_tls_key)!r}: cannot be used ({err.message})"
            ) from None
        auth.set_tls_certificate(certificate)
    if not settings.rtsp_auth:
        auth.set_default_token(_token(VIEWER_ROLE))
        return auth, _permissions((VIEWER_ROLE, True))
    auth.set_default_token(_token(ANONYMOUS_ROLE))
    if settings.rtsp_auth_method == "basic":
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        for user, password in settings.rtsp_credentials:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), _token(VIEWER_ROLE))
    else:
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        for user, password in settings.rtsp_credentials:
            auth.add_digest(user, password, _token(VIEWER_ROLE))
    return auth, _permissions((VIEWER_ROLE, True), (ANONYMOUS_ROLE, False))


def describe_access(settings: Settings) -> str:
    """What a viewer needs, for the start-up log line (never a user name or password)."""
    parts = []
    if settings.rtsp_auth:
        count = len(settings.rtsp_credentials)
        parts.append(f"{settings.rtsp_auth_method} auth, {count} user{'s' if count != 1 else ''}")
    else:
        parts.append("no auth: anyone who can reach the port may watch")
    parts.append("TLS, TCP interleaved only" if settings.rtsp_tls else "UDP, or TCP interleaved")
    return "; ".join(parts)
