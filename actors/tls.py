"""TLS of the member's HTTP gateway and gRPC door (https:// in the config).

The certificate and key come from member.tls (cairn/config.py); with
client_ca_file, clients must present a certificate that CA signed, as etcd's
--client-cert-auth with --trusted-ca-file. The standard ssl module serves the
HTTP gateway (aiohttp), grpc.ssl_server_credentials the gRPC door.
"""

from __future__ import annotations

import ssl


def is_tls(url: str) -> bool:
    return url.startswith("https://")


def server_ssl_context(config, member_name: str) -> ssl.SSLContext:
    """The HTTP gateway's TLS context: TLS 1.2 or later, the member's certificate,
    and client-certificate verification when the config names a CA."""
    files = config.tls_files(member_name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    if files.client_ca_file:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=files.client_ca_file)
    return context


def grpc_server_credentials(config, member_name: str):
    """The gRPC door's TLS credentials, with the same files and client verification."""
    import grpc

    files = config.tls_files(member_name)
    with open(files.key_file, "rb") as handle:
        key = handle.read()
    with open(files.cert_file, "rb") as handle:
        certificate = handle.read()
    root = None
    if files.client_ca_file:
        with open(files.client_ca_file, "rb") as handle:
            root = handle.read()
    return grpc.ssl_server_credentials([(key, certificate)], root_certificates=root, require_client_auth=root is not None)
