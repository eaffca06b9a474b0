#!/usr/bin/env python3
"""Drive oras-py (PyPI 'oras', 0.2.x) against a plain-HTTP registry.

Run with the e2e venv's python. Files are given relative to the current
directory (oras-py refuses paths outside it).

  oras_e2e.py push HOST REPO:TAG --artifact-type T [--config-media-type M]
              [--subject REPO:TAG] [--chunked] [--chunk-size N] FILE...
  oras_e2e.py pull HOST REPO:TAG|REPO@DIGEST OUTDIR

push prints JSON: the manifest digest the registry answered
(Docker-Content-Digest), the sha256 of the manifest bytes actually sent,
the OCI-Subject response header (null if absent) and the status code.
pull prints JSON: the list of files written.

oras-py 0.2.x has no artifact-type option, and its push() takes a
`subject` (oras.oci.Subject) but no artifactType; this helper sets the
manifest's `artifactType` by wrapping Registry.upload_manifest, which is
otherwise oras-py's own code path.
"""
import argparse
import hashlib
import json
import sys
import time

import oras.provider  # first: importing oras.decorator alone hits an import cycle
import oras.decorator
import oras.defaults
import oras.oci

# oras-py retries failed requests with sleeps of 2+3^n seconds; keep the
# retries but bound the waits so a broken registry fails fast.
_real_sleep = time.sleep


class _FastTime:
    @staticmethod
    def sleep(seconds):
        _real_sleep(min(seconds, 0.5))


oras.decorator.time = _FastTime

MANIFEST_ACCEPT = ", ".join(oras.defaults.default_manifest_accepted_media_types)


class E2ERegistry(oras.provider.Registry):
    artifact_type = None
    last_body = None

    def upload_manifest(self, manifest, container):
        if self.artifact_type:
            manifest["artifactType"] = self.artifact_type
        response = super().upload_manifest(manifest, container)
        E2ERegistry.last_body = response.request.body
        return response


def resolve_subject(reg: E2ERegistry, ref: str) -> oras.oci.Subject:
    """Describe REF's manifest from its exact bytes (Subject.from_manifest
    would re-serialise the JSON and get a different digest)."""
    container = reg.get_container(ref)
    resp = reg.do_request(
        f"{reg.prefix}://{container.manifest_url()}", "GET", headers={"Accept": MANIFEST_ACCEPT}
    )
    if resp.status_code != 200:
        raise SystemExit(f"subject {ref}: GET manifest returned {resp.status_code}")
    body = resp.content
    media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
    if not media_type:
        media_type = json.loads(body).get("mediaType", oras.defaults.default_manifest_media_type)
    return oras.oci.Subject(
        mediaType=media_type, digest="sha256:" + hashlib.sha256(body).hexdigest(), size=len(body)
    )


def cmd_push(a) -> int:
    reg = E2ERegistry(hostname=a.host, insecure=True, tls_verify=False)
    reg.artifact_type = a.artifact_type
    subject = resolve_subject(reg, a.subject) if a.subject else None
    config = None
    if a.config_media_type:
        # "{}" is what oras-py uploads as an empty config; give it the type asked for.
        with open(".oras-config.json", "w") as f:
            f.write("{}")
        config = f".oras-config.json:{a.config_media_type}"
    resp = reg.push(
        target=f"{a.host}/{a.ref}",
        files=a.files,
        manifest_config=config,
        manifest_annotations={"org.wharf.e2e": "oras-py"},
        subject=subject,
        do_chunked=a.chunked,
        chunk_size=a.chunk_size,
        quiet=True,
    )
    body = E2ERegistry.last_body or b""
    if isinstance(body, str):
        body = body.encode()
    print(
        json.dumps(
            {
                "status": resp.status_code,
                "digest": resp.headers.get("Docker-Content-Digest"),
                "sent_digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                "oci_subject": resp.headers.get("OCI-Subject"),
                "subject": subject.digest if subject else None,
            }
        )
    )
    return 0 if resp.status_code == 201 else 1


def cmd_pull(a) -> int:
    reg = E2ERegistry(hostname=a.host, insecure=True, tls_verify=False)
    files = reg.pull(target=f"{a.host}/{a.ref}", outdir=a.outdir)
    print(json.dumps({"files": sorted(files)}))
    return 0 if files else 1


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("push")
    ps.add_argument("host")
    ps.add_argument("ref")
    ps.add_argument("files", nargs="+")
    ps.add_argument("--artifact-type")
    ps.add_argument("--config-media-type")
    ps.add_argument("--subject")
    ps.add_argument("--chunked", action="store_true")
    ps.add_argument("--chunk-size", type=int, default=oras.defaults.default_chunksize)
    pl = sub.add_parser("pull")
    pl.add_argument("host")
    pl.add_argument("ref")
    pl.add_argument("outdir")
    a = p.parse_args()
    return cmd_push(a) if a.cmd == "push" else cmd_pull(a)


if __name__ == "__main__":
    sys.exit(main())
