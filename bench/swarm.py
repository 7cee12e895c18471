#!/usr/bin/env python3
"""A light load generator: N clients pulling one image at once, in one
process (asyncio), as N nodes starting the same pod would.

Each client opens one keep-alive HTTP/1.1 connection, GETs the manifest,
then every blob it lists (config first, then the layers, one after the
other), hashes every body and compares it with the digest it was asked for.
All clients are connected and waiting before the first request is sent.

    swarm.py HOST PORT MANIFEST_PATH QUERY N [TIMEOUT_S]

prints one JSON object: clients OK, bad bodies, errors, wall time, and the
time to first byte of every request (milliseconds, sorted).
"""
import asyncio
import hashlib
import json
import resource
import sys
import time

READ = 1 << 20


class Bad(Exception):
    """A response that is not the expected one."""


async def get(reader, writer, host, path, accept=None):
    """Sends one GET, returns (time to first byte, status, body hasher or body)."""
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
    if accept:
        head += f"Accept: {accept}\r\n"
    t0 = time.monotonic()
    writer.write((head + "\r\n").encode())
    first = await reader.read(READ)
    ttfb = time.monotonic() - t0
    if not first:
        raise Bad("connection closed before the response")
    buf = first
    while b"\r\n\r\n" not in buf:
        more = await reader.read(READ)
        if not more:
            raise Bad("connection closed in the headers")
        buf += more
    header, _, rest = buf.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise Bad(f"no Content-Length (status {status})")
    return ttfb, status, length, rest


async def body(reader, length, rest, keep):
    """Reads the rest of a body of `length` bytes; returns (sha256 hex, bytes if `keep`)."""
    h = hashlib.sha256(rest)
    kept = [rest] if keep else None
    left = length - len(rest)
    while left > 0:
        chunk = await reader.read(min(READ, left))
        if not chunk:
            raise Bad(f"body cut with {left} bytes to go")
        h.update(chunk)
        if keep:
            kept.append(chunk)
        left -= len(chunk)
    if left < 0:
        raise Bad("more bytes than Content-Length")
    return h.hexdigest(), (b"".join(kept) if keep else None)


async def client(host, port, path, query, ready, start, ttfbs):
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=READ)
    finally:
        ready.release()
    try:
        await start.wait()
        accept = ("application/vnd.oci.image.manifest.v1+json,"
                  "application/vnd.docker.distribution.manifest.v2+json")
        ttfb, status, length, rest = await get(reader, writer, host, path + query, accept)
        ttfbs.append(ttfb)
        if status != 200:
            raise Bad(f"manifest: status {status}")
        _, manifest = await body(reader, length, rest, keep=True)
        doc = json.loads(manifest)
        repo = path.split("/manifests/")[0]
        for desc in [doc["config"]] + doc["layers"]:
            ttfb, status, length, rest = await get(reader, writer, host, f"{repo}/blobs/{desc['digest']}{query}")
            ttfbs.append(ttfb)
            if status != 200 or length != desc["size"]:
                raise Bad(f"blob {desc['digest'][:19]}: status {status}, {length} bytes")
            hexd, _ = await body(reader, length, rest, keep=False)
            if "sha256:" + hexd != desc["digest"]:
                return "bad"
        return "ok"
    finally:
        writer.close()


async def main():
    host, port, path, query, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 300.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 256)), hard))
    ready, start, ttfbs = asyncio.Semaphore(0), asyncio.Event(), []
    tasks = [asyncio.create_task(client(host, port, path, query, ready, start, ttfbs)) for _ in range(n)]
    # every client is connected (or failed to connect) before the release
    for _ in range(n):
        await ready.acquire()
    t0 = time.monotonic()
    start.set()
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    wall = time.monotonic() - t0
    for t in pending:
        t.cancel()
    outcomes = {"ok": 0, "bad": 0}
    errors = {}
    for t in done:
        e = t.exception()
        if e is not None:
            what = f"{type(e).__name__}: {e}"[:120]
            errors[what] = errors.get(what, 0) + 1
        else:
            outcomes[t.result()] += 1
    print(json.dumps({
        "n": n, "ok": outcomes["ok"], "bad": outcomes["bad"], "timed_out": len(pending),
        "errors": errors, "wall": wall, "ttfb_ms": sorted(round(x * 1000, 2) for x in ttfbs),
    }))


if __name__ == "__main__":
    asyncio.run(main())
