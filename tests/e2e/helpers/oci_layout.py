#!/usr/bin/env python3
"""Write small OCI image layouts by hand (no network, stdlib only).

Usage:
  oci_layout.py image DIR --ref TAG [--arch amd64] [--text STR] [--random-kib N]
      One image: a gzip'd tar layer holding /hello.txt (STR) and /random.bin
      (N KiB of random bytes), an OCI config and an OCI image manifest.
  oci_layout.py index DIR --ref TAG --archs amd64,arm64 [--text STR]
      One image per architecture (as above, each with its own layer) and an
      OCI image index over them with linux/<arch> platforms.
  oci_layout.py verify DIR
      Check that every blob under DIR/blobs/sha256 hashes to its file name.

Every command prints a JSON summary on stdout: the top-level descriptor
(digest, size, mediaType) that the ref names, and for index layouts the
children's descriptors by architecture.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


def canonical(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class Layout:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def put(self, data: bytes, media_type: str, **extra) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.root, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        desc = {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}
        desc.update(extra)
        return desc

    def write_index(self, desc: dict, ref: str) -> None:
        entry = dict(desc)
        entry["annotations"] = {REF_ANNOTATION: ref}
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [entry]}
        with open(os.path.join(self.root, "index.json"), "wb") as f:
            f.write(canonical(index))


def make_layer(text: str, random_kib: int) -> tuple[bytes, bytes]:
    """Return (gzip'd tar, uncompressed tar) with deterministic metadata."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        files = [("hello.txt", text.encode()), ("random.bin", os.urandom(random_kib * 1024))]
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    # mtime=0 and a fixed level keep the gzip stream reproducible for a given tar.
    gz = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    return gz, tar_bytes


def make_image(layout: Layout, arch: str, text: str, random_kib: int) -> dict:
    gz, tar_bytes = make_layer(text, random_kib)
    layer = layout.put(gz, MT_LAYER_GZ)
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/hello.txt"], "Labels": {"org.wharf.e2e": text}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "wharf e2e oci_layout.py"}],
    }
    cfg = layout.put(canonical(config), MT_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": cfg,
        "layers": [layer],
        "annotations": {"org.opencontainers.image.description": text},
    }
    return layout.put(canonical(manifest), MT_MANIFEST)


def verify(root: str) -> dict:
    bad, count = [], 0
    blobdir = os.path.join(root, "blobs", "sha256")
    for name in sorted(os.listdir(blobdir)):
        with open(os.path.join(blobdir, name), "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != name:
                bad.append(name)
        count += 1
    return {"blobs": count, "bad": bad}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["image", "index", "verify"])
    p.add_argument("dir")
    p.add_argument("--ref", default="latest")
    p.add_argument("--arch", default="amd64")
    p.add_argument("--archs", default="amd64,arm64")
    p.add_argument("--text", default="hello from wharf e2e")
    p.add_argument("--random-kib", type=int, default=64)
    a = p.parse_args()

    if a.cmd == "verify":
        res = verify(a.dir)
        print(json.dumps(res))
        return 1 if res["bad"] else 0

    layout = Layout(a.dir)
    if a.cmd == "image":
        desc = make_image(layout, a.arch, a.text, a.random_kib)
        layout.write_index(desc, a.ref)
        print(json.dumps({"top": desc}))
        return 0

    children = {}
    for arch in a.archs.split(","):
        d = make_image(layout, arch, f"{a.text} ({arch})", a.random_kib)
        d["platform"] = {"architecture": arch, "os": "linux"}
        children[arch] = d
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": list(children.values()),
        "annotations": {"org.opencontainers.image.description": a.text},
    }
    top = layout.put(canonical(index), MT_INDEX)
    layout.write_index(top, a.ref)
    print(json.dumps({"top": top, "children": children}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
