#!/usr/bin/env python3
"""Push and pull an image with docker-registry-client-async (PyPI, 1.0.x)
against a plain-HTTP registry.

Run with the e2e venv's python:

  drca_e2e.py HOST REPO TAG

Pushes, through the library's API only: a config blob monolithically
(POST, then one PUT with the bytes), a layer in an upload session in two chunks
(POST, PATCH, PATCH, PUT: every request after the POST goes to the
Location the registry answered, which this library requires to be an
absolute URL), and an OCI manifest under TAG. Then checks the blobs
(HEAD, GET) and the manifest (HEAD and GET by tag and by digest) byte for
byte. Prints a JSON summary; any error exits non-zero with the reason.
"""
import asyncio
import hashlib
import json
import os
import sys

from docker_registry_client_async import (
    DockerRegistryClientAsync,
    FormattedSHA256,
    ImageName,
)
from docker_registry_client_async.manifest import Manifest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> FormattedSHA256:
    return FormattedSHA256(hashlib.sha256(data).hexdigest())


def check(cond, what):
    if not cond:
        raise SystemExit(f"drca_e2e: {what}")


async def main(host: str, repo: str, tag: str) -> dict:
    http = {"protocol": "http"}
    image = ImageName.parse(f"{host}/{repo}:{tag}")
    check(image.resolve_endpoint() == host, f"endpoint {image.resolve_endpoint()}")
    config = json.dumps({"drca": os.urandom(8).hex()}).encode()
    layer = os.urandom(300 * 1024)
    locations = []
    async with DockerRegistryClientAsync() as drca:
        # config: monolithic, a POST then one PUT with all the bytes
        d_config = sha256(config)
        r = await drca.post_blob(image, **http)
        check(r.client_response.status == 202, f"POST: {r.client_response.status}")
        locations.append(r.location)
        r = await drca.put_blob_upload(r.location, d_config, data=config)
        check(r.digest == d_config, f"digest of the config: {r.digest}")
        locations.append(r.location)

        # layer: a session, two chunks, then the closing PUT
        d_layer = sha256(layer)
        r = await drca.post_blob(image, **http)
        check(r.client_response.status == 202, f"POST: {r.client_response.status}")
        locations.append(r.location)
        half = len(layer) // 2
        r = await drca.patch_blob_upload(r.location, layer[:half], offset=0)
        locations.append(r.location)
        r = await drca.patch_blob_upload(r.location, layer[half:], offset=half)
        locations.append(r.location)
        check(r.range == f"0-{len(layer) - 1}", f"Range after the chunks: {r.range}")
        r = await drca.put_blob_upload(r.location, d_layer)
        check(r.digest == d_layer, f"digest of the layer: {r.digest}")
        locations.append(r.location)

        manifest_bytes = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": str(d_config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": str(d_layer),
                        "size": len(layer),
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        d_manifest = sha256(manifest_bytes)
        manifest = Manifest(manifest_bytes, media_type=OCI_MANIFEST)
        r = await drca.put_manifest(image, manifest, **http)
        check(r.digest == d_manifest, f"manifest digest: {r.digest} != {d_manifest}")
        locations.append(r.client_response.headers.get("Location"))

        # pull it all back
        for digest, data in ((d_config, config), (d_layer, layer)):
            h = await drca.head_blob(image, digest, **http)
            check(h.result and h.digest == digest, f"HEAD blob {digest}")
            g = await drca.get_blob(image, digest, **http)
            check(g.blob == data, f"blob {digest} differs")
        by_digest = ImageName.parse(f"{host}/{repo}@{d_manifest}")
        for name in (image, by_digest):
            h = await drca.head_manifest(name, **http)
            check(h.result and h.digest == d_manifest, f"HEAD manifest {name}")
            g = await drca.get_manifest(name, accept=OCI_MANIFEST, **http)
            check(g.manifest.get_bytes() == manifest_bytes, f"manifest {name} differs")
            check(g.manifest.get_media_type() == OCI_MANIFEST, f"media type of {name}")
        tags = await drca.get_tag_list(image, **http)
        check(tag in [str(t.resolve_tag()) for t in tags.tags], f"{tag} not listed")
    return {
        "config": str(d_config),
        "layer": str(d_layer),
        "manifest": str(d_manifest),
        "locations": locations,
    }


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: drca_e2e.py HOST REPO TAG")
    print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
