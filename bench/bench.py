#!/usr/bin/env python3
"""Side-by-side benchmark: ociregistry vs CNCF Distribution in proxy mode.

Started by bench/run (which installs the tools and builds the server). Every
process listens on 127.0.0.1 only; every load run is bounded in time.
Results: STATE/results/<stamp>/results.json, then report.py writes the
Markdown table and the PNG charts.
"""

import argparse
import hashlib
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import urllib.request
import http.client

import report

MIB = 1024 * 1024
GIB = 1024 * MIB
ACCEPT = ("application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
          "application/vnd.docker.distribution.manifest.v2+json,"
          "application/vnd.docker.distribution.manifest.list.v2+json")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ScenarioFailed(Exception):
    """A scenario could not run (as opposed to a result that misses a target)."""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_status(pid, key):
    """A numeric field of /proc/PID/status (VmRSS, VmHWM in kB; Threads), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu(pid):
    """User+system CPU seconds of PID (all threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def stop_process(proc, grace=5.0):
    """TERM the given child (by its PID only), KILL it after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def clean_env():
    # distribution reads every REGISTRY_* variable as a configuration override
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


def http_status(url, method="GET", headers=None, timeout=2.0):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# --------------------------------------------------------------------------
# Servers


class Server:
    """A server process the benchmark starts, measures and stops."""
    key = "?"
    label = "?"

    def __init__(self, bench):
        self.b = bench
        self.proc = None
        self.port = None
        self.peak_kb = {}     # scenario -> max VmHWM of the instances in it
        self.scenario = "idle"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def hwm_kb(self):
        return proc_status(self.pid, "VmHWM") if self.proc else None

    def record_peak(self):
        hwm = self.hwm_kb()
        if hwm:
            self.peak_kb[self.scenario] = max(self.peak_kb.get(self.scenario, 0), hwm)

    def stop(self):
        if self.proc is None:
            return
        self.record_peak()
        stop_process(self.proc)
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Upstream(Server):
    """The real upstream: distribution 2.8 serving the generated images."""
    key = "upstream"
    label = "upstream (distribution)"

    def __init__(self, bench):
        super().__init__(bench)
        self.dir = os.path.join(bench.state, "upstream")
        self.logf = os.path.join(self.dir, "access.log")

    def start(self):
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        self.port = free_port()
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write(distribution_config(os.path.join(self.dir, "data"), self.port, "bench-upstream"))
        out = open(self.logf, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
        out.close()
        wait_v2(self, 20)

    def offset(self):
        return os.path.getsize(self.logf)

    def since(self, off):
        with open(self.logf, "rb") as f:
            f.seek(off)
            return f.read().decode("utf-8", "replace")

    def settle(self, off, quiet=1.0, limit=10.0):
        """Waits until the access log stops growing (requests are logged when they end)."""
        end = time.monotonic() + limit
        last = os.path.getsize(self.logf)
        still = time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.2)
            size = os.path.getsize(self.logf)
            if size != last:
                last, still = size, time.monotonic()
            elif time.monotonic() - still >= quiet:
                break
        return self.since(off)


def size_label_b(n):
    """`1 GiB`, `2 MiB`: a size for log lines."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def count_requests(text, method=None, path=None):
    """Requests in a distribution access-log excerpt (combined log format)."""
    m = method or r"(?:GET|HEAD)"
    p = re.escape(path) if path else r"/v2/"
    return len(re.findall(rf'"{m} {p}[^ "]* HTTP/', text))


def distribution_config(root, port, secret, remote=None):
    cfg = f"""version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
"""
    if remote:
        cfg += f"proxy:\n  remoteurl: {remote}\n"
    return cfg


def wait_v2(server, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            raise ScenarioFailed(f"{server.label} exited at start-up (rc={server.proc.returncode})")
        if http_status(server.url + "/v2/", timeout=1.0) == 200:
            return
        time.sleep(0.05)
    raise ScenarioFailed(f"{server.label} did not answer /v2/ within {timeout}s")


class Distribution(Server):
    """distribution 2.8 in proxy (pull-through) mode in front of the upstream."""
    key = "dist"
    label = "distribution proxy"

    def __init__(self, bench):
        super().__init__(bench)
        self.dir = os.path.join(bench.state, "distribution")

    def start(self):
        data = os.path.join(self.dir, "data")
        os.makedirs(data, exist_ok=True)
        self.port = free_port()
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write(distribution_config(data, self.port, "bench-proxy", self.b.upstream.url))
        out = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
        out.close()
        wait_v2(self, 20)

    def reset(self):
        self.stop()
        shutil.rmtree(os.path.join(self.dir, "data"), ignore_errors=True)
        self.start()

    def repo_path(self, name):
        return f"/v2/library/{name}"

    def query(self):
        return ""

    def skopeo_ref(self, name):
        return f"docker://127.0.0.1:{self.port}/library/{name}:latest"


class OciRegistry(Server):
    """The server under test."""
    key = "oci"
    label = "ociregistry"

    def __init__(self, bench):
        super().__init__(bench)
        self.dir = os.path.join(bench.state, "ociregistry")
        self.cache = os.path.join(self.dir, "cache")
        self.startup_s = None
        self.fixed_port = None

    def config_file(self):
        cfg = os.path.join(self.dir, "config.yaml")
        upstream = getattr(self, "upstream_url", None) or self.b.upstream.url
        with open(cfg, "w") as f:
            f.write(getattr(self, "top_extra", "")
                    + "registries:\n"
                    "  - name: docker.io\n"
                    f"    urls: [{upstream}]\n"
                    + getattr(self, "registry_extra", ""))
        return cfg

    def start(self, image_path=None):
        os.makedirs(self.dir, exist_ok=True)
        self.port = self.fixed_port or free_port()
        cfg = self.config_file()
        err = open(os.path.join(self.dir, "server.log"), "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.b.binary, "--config-file", cfg, "--image-path", image_path or self.cache,
             "serve", "--port", str(self.port), "--host", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        err.close()
        line = b""
        fd = self.proc.stdout.fileno()
        deadline = t0 + 60
        while b"\n" not in line:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise ScenarioFailed("ociregistry printed no listening line within 60 s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    rc = self.proc.wait()
                    self.proc = None
                    raise ScenarioFailed(f"ociregistry exited at start-up (rc={rc}); see {self.dir}/server.log")
                line += chunk
        self.startup_s = time.monotonic() - t0
        text = line.decode()
        if "ociregistry listening on http://" not in text:
            self.stop()
            raise ScenarioFailed(f"unexpected first line from ociregistry: {text!r}")
        # keep draining stdout so the server can never block on it
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        return self.startup_s

    @staticmethod
    def _drain(pipe):
        try:
            while pipe.read(65536):
                pass
        except (OSError, ValueError):
            pass

    def reset(self):
        self.stop()
        shutil.rmtree(self.cache, ignore_errors=True)
        self.start()

    def repo_path(self, name):
        return f"/v2/library/{name}"

    def query(self):
        return "?ns=docker.io"

    def skopeo_ref(self, name):
        return f"docker://127.0.0.1:{self.port}/docker.io/library/{name}:latest"


class S3(Server):
    """moto in server mode: an S3 API server on 127.0.0.1 (buckets in memory)."""
    key = "s3"
    label = "moto (S3)"

    def __init__(self, bench):
        super().__init__(bench)
        self.buckets = 0

    def start(self):
        self.port = free_port()
        log_file = open(os.path.join(self.b.state, "moto.log"), "ab")
        self.proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log_file.close()
        deadline = time.monotonic() + 30
        while http_status(self.url + "/") is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise ScenarioFailed("moto_server did not answer")
            time.sleep(0.05)

    def new_bucket(self):
        """A new empty bucket: each cold run starts from nothing."""
        self.buckets += 1
        name = f"bench{self.buckets}"
        req = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        return name


class OciBucket(OciRegistry):
    """ociregistry whose store is a bucket (one replica of several)."""
    key = "oci-s3"
    label = "ociregistry on S3"

    def __init__(self, bench, s3, name="s3"):
        super().__init__(bench)
        self.s3, self.replica, self.bucket = s3, name, None
        self.dir = os.path.join(bench.state, f"ociregistry-{name}")
        self.cache = os.path.join(self.dir, "cache")

    def config_file(self):
        cfg = super().config_file()
        with open(cfg, "a") as f:
            f.write("storage:\n  kind: s3\n"
                    f"  bucket: {self.bucket}\n  endpoint: {self.s3.url}\n  region: us-east-1\n"
                    "  pathStyle: true\n  accessKeyId: bench\n  secretAccessKey: bench\n"
                    f"  replica: {self.replica}\n")
        return cfg

    def reset(self):
        self.stop()
        shutil.rmtree(self.cache, ignore_errors=True)
        self.bucket = self.s3.new_bucket()
        self.start()


class Replicas(Server):
    """Three ociregistry replicas on one bucket behind haproxy (round-robin
    TCP, as a Kubernetes Service); `pid` is the first replica's."""
    key = "oci-s3x3"
    label = "3 replicas on S3"

    def __init__(self, bench, s3):
        super().__init__(bench)
        self.replicas = [OciBucket(bench, s3, f"r{n}") for n in range(3)]
        self.s3, self.balancer = s3, None

    @property
    def pid(self):
        return self.replicas[0].pid

    def reset(self):
        self.stop()
        bucket = self.s3.new_bucket()
        for r in self.replicas:
            shutil.rmtree(r.cache, ignore_errors=True)
            r.bucket, r.fixed_port = bucket, r.fixed_port or free_port()
            r.start()
        self.port = free_port()
        servers = "".join(f"  server r{n} 127.0.0.1:{r.port} check inter 100ms fall 1 rise 1\n"
                          for n, r in enumerate(self.replicas))
        cfg = os.path.join(self.b.state, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 1s\n"
                    "  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch\n"
                    f"listen registry\n  bind 127.0.0.1:{self.port}\n  balance roundrobin\n{servers}")
        self.balancer = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + 30
        while http_status(self.url + "/v2/") is None:
            if time.monotonic() > deadline:
                raise ScenarioFailed("haproxy did not answer")
            time.sleep(0.05)
        self.proc = self.balancer

    def stop(self):
        for r in self.replicas:
            r.stop()
        stop_process(self.balancer)
        self.balancer = self.proc = None

    def repo_path(self, name):
        return f"/v2/library/{name}"

    def query(self):
        return "?ns=docker.io"


class Nginx(Server):
    """nginx (Debian) serving static files with sendfile: the physical reference."""
    key = "nginx"
    label = "nginx sendfile"

    def __init__(self, bench):
        super().__init__(bench)
        self.dir = os.path.join(bench.state, "nginx")
        self.www = os.path.join(self.dir, "www")

    def start(self):
        for d in ("www", "tmp", "logs"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        self.port = free_port()
        tmp = os.path.join(self.dir, "tmp")
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes auto;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  default_type application/octet-stream;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{self.port};
    root {self.www};
  }}
}}
""")
        out = open(os.path.join(self.dir, "logs", "stderr.log"), "ab")
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", conf], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        end = time.monotonic() + 10
        while http_status(self.url + "/", timeout=1.0) is None:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise ScenarioFailed("nginx did not start (see nginx/logs)")
            time.sleep(0.05)

    def worker_pids(self):
        try:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.pid)],
                                 capture_output=True, text=True).stdout
            return [int(p) for p in out.split()]
        except (OSError, ValueError):
            return []


class Throttle(Server):
    """nginx in front of the upstream registry, capping every response at
    `rate` bytes per second (a CDN-like per-connection cap, not a total
    one), logging the body bytes it sends."""
    key = "throttle"
    label = "throttled upstream"

    def __init__(self, bench, rate):
        super().__init__(bench)
        self.rate = rate
        self.dir = os.path.join(bench.state, "throttle")
        self.log_path = os.path.join(self.dir, "logs", "access.log")

    def start(self):
        for d in ("tmp", "logs"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        self.port = free_port()
        tmp = os.path.join(self.dir, "tmp")
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  log_format bytes '$status $body_bytes_sent $request_uri';
  access_log {self.log_path} bytes;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream registry {{ server 127.0.0.1:{self.b.upstream.port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://registry;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_max_temp_file_size 0;
      limit_rate {self.rate};
    }}
  }}
}}
""")
        out = open(os.path.join(self.dir, "logs", "stderr.log"), "ab")
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", conf], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        wait_v2(self, 10)

    def sent_bytes(self):
        """Body bytes sent so far (200 and 206 answers)."""
        try:
            with open(self.log_path) as f:
                return sum(int(line.split()[1]) for line in f if line.split()[0] in ("200", "206"))
        except OSError:
            return 0


# --------------------------------------------------------------------------
# Images: generated offline, pushed with the Registry API


class RandomReader:
    """Deterministic pseudo-random bytes."""

    def __init__(self, seed):
        import random
        self.r = random.Random(seed)

    def chunk(self, n):
        return self.r.randbytes(n)


def write_layer(path, seed, size):
    """An uncompressed tar layer holding one pseudo-random file of `size` bytes.
    Returns (sha256 hex, length)."""
    h = hashlib.sha256()
    total = 0
    with open(path + ".tmp", "wb") as f:
        def put(b):
            nonlocal total
            f.write(b)
            h.update(b)
            total += len(b)
        ti = tarfile.TarInfo(f"bench/{seed}.bin")
        ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = size, 1704067200, 0o644, 0, 0
        put(ti.tobuf(format=tarfile.GNU_FORMAT))
        rnd, left = RandomReader(seed), size
        while left:
            n = min(left, MIB)
            put(rnd.chunk(n))
            left -= n
        if size % 512:
            put(b"\0" * (512 - size % 512))
        put(b"\0" * 1024)
        if total % 10240:
            put(b"\0" * (10240 - total % 10240))
    hexd = h.hexdigest()
    os.replace(path + ".tmp", os.path.join(os.path.dirname(path), hexd))
    return hexd, total


def make_images(bench):
    """Builds the test images once per size set; returns their description."""
    s = bench.sizes
    tag = f"v2-s{s['small']}-l{s['large']}-h{s['huge']}-m{s['mid']}-f{s['fleet']}"
    root = os.path.join(bench.state, "images", tag)
    desc_file = os.path.join(root, "images.json")
    if os.path.exists(desc_file):
        with open(desc_file) as f:
            return root, json.load(f)
    log(f"generating images ({tag}) in {root}")
    blobs = os.path.join(root, "blobs")
    os.makedirs(blobs, exist_ok=True)
    layers = {}
    for name, size in (("small", s["small"]), ("large", s["large"]), ("huge", s["huge"]),
                       ("mid", s["mid"]), ("tiny", 64 * 1024),
                       *((f"fleet{i}", s["fleet"] << i) for i in range(5))):
        hexd, n = write_layer(os.path.join(blobs, f"layer-{name}"), f"ociregistry-bench-{name}", size)
        layers[name] = {"digest": "sha256:" + hexd, "size": n}
        log(f"  layer {name}: {n} bytes sha256:{hexd[:12]}")

    def put(data):
        hexd = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, hexd), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + hexd, "size": len(data)}

    images = {}
    for name, parts in (("small", ["small"]), ("large", ["large"]), ("huge", ["huge"]),
                        ("multilayer", ["small", "large", "mid", "tiny"]),
                        ("fleet", [f"fleet{i}" for i in range(5)])):
        ls = [layers[p] for p in parts]
        config = json.dumps({
            "created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Labels": {"org.opencontainers.image.title": name}},
            "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in ls]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "bench"} for _ in ls],
        }, separators=(",", ":")).encode()
        cfg = put(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **cfg},
            "layers": [{"mediaType": OCI_LAYER_TAR, **l} for l in ls],
            "annotations": {"org.opencontainers.image.title": name},
        }, separators=(",", ":")).encode()
        m = put(manifest)
        images[name] = {"manifest": m, "config": cfg, "layers": ls,
                        "blobs": [cfg["digest"]] + [l["digest"] for l in ls]}
    with open(desc_file, "w") as f:
        json.dump(images, f, indent=1)
    return root, images


def push_images(bench):
    """Pushes every generated image to the upstream (skips blobs it already has)."""
    up = bench.upstream
    for name, img in bench.images.items():
        conn = http.client.HTTPConnection("127.0.0.1", up.port, timeout=300)
        repo = f"library/{name}"
        for digest in img["blobs"]:
            conn.request("HEAD", f"/v2/{repo}/blobs/{digest}")
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                continue
            conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
            r = conn.getresponse()
            r.read()
            if r.status != 202:
                raise ScenarioFailed(f"upstream refused upload start: {r.status}")
            loc = r.getheader("Location")
            loc = re.sub(r"^https?://[^/]+", "", loc)
            sep = "&" if "?" in loc else "?"
            path = os.path.join(bench.image_root, "blobs", digest.split(":")[1])
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                conn.request("PUT", f"{loc}{sep}digest={digest}", body=f,
                             headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
                r = conn.getresponse()
                r.read()
            if r.status != 201:
                raise ScenarioFailed(f"upstream refused blob {digest}: {r.status}")
        mpath = os.path.join(bench.image_root, "blobs", img["manifest"]["digest"].split(":")[1])
        with open(mpath, "rb") as f:
            body = f.read()
        conn.request("PUT", f"/v2/{repo}/manifests/latest", body=body,
                     headers={"Content-Type": OCI_MANIFEST})
        r = conn.getresponse()
        r.read()
        if r.status != 201:
            raise ScenarioFailed(f"upstream refused manifest of {name}: {r.status}")
        conn.close()
    log("images pushed to the upstream")


# --------------------------------------------------------------------------
# Clients

CURL_FMT = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}\\n"
LIMIT = {"client": 900}  # seconds any one client may take (smoke: 60)


def curl_cmd(url, headers=(), method=None):
    cmd = ["curl", "--noproxy", "*", "-sS", "-o", "/dev/null", "-w", CURL_FMT, "--max-time", str(LIMIT["client"])]
    for h in headers:
        cmd += ["-H", h]
    if method == "HEAD":
        cmd += ["-I"]
    return cmd + [url]


def parse_curl(out):
    try:
        code, size, ttfb, total = out.split()[:4]
        return {"code": int(code), "size": int(size), "ttfb": float(ttfb), "total": float(total)}
    except ValueError:
        return {"code": 0, "size": 0, "ttfb": None, "total": None, "error": out.strip()[-300:]}


def curl_once(url, headers=()):
    r = subprocess.run(curl_cmd(url, headers), capture_output=True, text=True, timeout=LIMIT["client"] + 60)
    res = parse_curl(r.stdout)
    if r.returncode:
        res["error"] = r.stderr.strip()[-300:]
    return res


class ForeignCpu:
    """CPU seconds used by user processes outside this benchmark's process tree
    (other work on the machine: compilers, ...), sampled every 0.5 s from /proc."""

    def __init__(self):
        self.me = os.getpid()
        self.seen = {}      # (pid, starttime) -> cpu ticks last seen
        self.total = 0      # ticks
        self.lock = threading.Lock()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.stop_ev = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def scan(self):
        procs = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # rest[1] = ppid, rest[11] utime, rest[12] stime, rest[19] starttime
            procs[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]), rest[19])
        ours = {}

        def is_ours(pid):
            chain = []
            while pid > 2 and pid not in ours:
                if pid == self.me:
                    ours[pid] = True
                    break
                chain.append(pid)
                pid = procs.get(pid, (0,))[0]
            verdict = ours.get(pid, False)
            for c in chain:
                ours[c] = verdict
            return verdict

        seen = {}
        delta = 0
        for pid, (ppid, ticks, start) in procs.items():
            if ppid == 2 or pid <= 2 or is_ours(pid):
                continue  # kernel threads and our own tree
            key = (pid, start)
            seen[key] = ticks
            if key in self.seen:
                delta += max(0, ticks - self.seen[key])
        with self.lock:
            self.seen = seen
            self.total += delta

    def run(self):
        self.scan()
        while not self.stop_ev.wait(0.5):
            try:
                self.scan()
            except Exception:  # noqa: BLE001 - a monitor must never break the run
                pass

    def seconds(self):
        with self.lock:
            return self.total / self.tick


FOREIGN = None


def children_cpu():
    """CPU seconds (user + system) used so far by this process's waited-for children."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def foreign_cpu():
    return FOREIGN.seconds() if FOREIGN else 0.0


class Sampler:
    """Samples a process's VmRSS, threads and (with `fds`) open descriptors
    every `period` seconds in a thread; keeps the peaks."""

    def __init__(self, pid, period=0.1, fds=False):
        self.pid, self.period, self.max_kb, self.samples = pid, period, 0, 0
        self.max_threads = self.max_fds = 0
        self.fds = fds
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_ev.is_set():
            kb = proc_status(self.pid, "VmRSS")
            if kb:
                self.max_kb = max(self.max_kb, kb)
                self.samples += 1
            threads = proc_status(self.pid, "Threads")
            if threads:
                self.max_threads = max(self.max_threads, threads)
            if self.fds:
                try:
                    self.max_fds = max(self.max_fds, len(os.listdir(f"/proc/{self.pid}/fd")))
                except OSError:
                    pass
            self.stop_ev.wait(self.period)

    def stop(self):
        self.stop_ev.set()
        self.t.join()
        return self.max_kb


def barrier_herd(cmds, workdir, timeout=None, configs=None):
    """Starts every command at the same instant and waits for all.

    With `configs`, each command is already exec'd and blocks reading its
    stdin (`curl -K -`), and the release writes each its config: the herd
    then starts within a few milliseconds, with no process start-up in between.
    Without, every command waits in `sh` for one line of a shared FIFO.
    Returns (list of (rc, stdout, stderr), wall seconds from release to the last exit)."""
    fifo = os.path.join(workdir, "barrier.fifo")
    if os.path.exists(fifo):
        os.unlink(fifo)
    os.mkfifo(fifo)
    wfd = os.open(fifo, os.O_RDWR)  # a writer exists from now on: readers block in read()
    procs = []
    try:
        for i, cmd in enumerate(cmds):
            out = open(os.path.join(workdir, f"c{i}.out"), "w+")
            err = open(os.path.join(workdir, f"c{i}.err"), "w+")
            if configs:
                p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.PIPE, env=clean_env())
            else:
                p = subprocess.Popen(["sh", "-c", 'read _ <"$0"; exec "$@"', fifo] + cmd,
                                     stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=clean_env())
            procs.append((p, out, err))
        # wait until every child sits in a pipe read (or 5 s)
        end = time.monotonic() + 5 + 0.02 * len(cmds)
        while time.monotonic() < end:
            waiting = 0
            for p, _, _ in procs:
                try:
                    with open(f"/proc/{p.pid}/wchan") as f:
                        if "pipe" in f.read():
                            waiting += 1
                except OSError:
                    pass
            if waiting == len(procs):
                break
            time.sleep(0.02)
        t0 = time.monotonic()
        if configs:
            for (p, _, _), cfg in zip(procs, configs):
                p.stdin.write(cfg)
                p.stdin.close()
        else:
            os.write(wfd, b"\n" * len(procs))
        deadline = t0 + (timeout or LIMIT["client"])
        results = []
        for p, out, err in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        wall = time.monotonic() - t0
        for p, out, err in procs:
            out.seek(0)
            err.seek(0)
            results.append((p.returncode, out.read(), err.read()))
            out.close()
            err.close()
        return results, wall
    finally:
        os.close(wfd)
        for p, _, _ in procs:
            if p.poll() is None:
                p.kill()
        os.unlink(fifo)


def skopeo_cmd(bench, src, dest_dir):
    return ["skopeo", "--policy", bench.policy, "--registries-conf", bench.registries_conf,
            "copy", "-q", "--src-tls-verify=false", "--src-authfile", bench.authfile,
            src, f"dir:{dest_dir}"]


def parse_unit_seconds(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def run_wrk(url, conns, dur):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{dur}s", "--latency", "--timeout", "10s", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 60)
    out = r.stdout
    res = {"tool": "wrk", "cmd": " ".join(cmd)}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = parse_unit_seconds(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["errors"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(int(x) for x in m.groups())
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    if res["rps"] is None:
        raise ScenarioFailed(f"wrk produced no result: {out[-300:]} {r.stderr[-300:]}")
    return res


def run_hey(url, conns, dur, method="GET", accept=None):
    cmd = ["hey", "-z", f"{dur}s", "-c", str(conns), "-m", method]
    if accept:
        cmd += ["-A", accept]
    cmd.append(url)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 60)
    out = r.stdout
    res = {"tool": "hey", "cmd": " ".join(c if c != accept else "'ACCEPT'" for c in cmd)}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%%? in ([\d.]+) secs", out, re.M)
        res[f"p{pct}"] = float(m.group(1)) if m else None
    codes = dict((int(c), int(n)) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    res["requests"] = sum(codes.values())
    res["errors"] = sum(n for c, n in codes.items() if c >= 300)
    m = re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", out)
    if m:
        res["errors"] += sum(int(x) for x in re.findall(r"\[(\d+)\]", m.group(1)))
    if res["rps"] is None:
        raise ScenarioFailed(f"hey produced no result: {out[-300:]} {r.stderr[-300:]}")
    return res


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.state = os.path.abspath(args.state)
        self.binary_src = os.path.abspath(args.binary)
        # run a private copy: a rebuild of the original during the run cannot swap it
        os.makedirs(os.path.join(self.state, "bin"), exist_ok=True)
        self.binary = os.path.join(self.state, "bin", "ociregistry")
        shutil.copy2(self.binary_src, self.binary + ".tmp")
        os.replace(self.binary + ".tmp", self.binary)
        self.repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if self.smoke:
            self.sizes = {"small": MIB, "large": MIB, "huge": 2 * MIB, "mid": MIB, "fleet": 16 * 1024}
            self.herd_ns = [5]
            self.image_herd_n = 5
            self.fleet_n = 20
            self.dur = 2
            self.reps = args.runs or 1
            self.huge_reps = self.reps
            self.pull_reps = self.reps
            self.mem_clients = 5
            self.startup_manifests = 200
            LIMIT["client"] = 60
        else:
            # fleet: 5 layers of 64 KiB to 1 MiB (about 2 MiB), pulled by 1,000 clients
            # at once: small enough that one Python process can hash what 1,000 receive
            self.sizes = {"small": MIB, "large": 100 * MIB, "huge": 1024 * MIB, "mid": 10 * MIB,
                          "fleet": 64 * 1024}
            self.herd_ns = [10, 50, 200]
            self.image_herd_n = 50
            self.fleet_n = 1000
            self.dur = 10
            self.reps = args.runs or 3
            self.huge_reps = self.reps  # a cold 1 GiB GET takes a few seconds here: no need to cut
            # one cold pull takes half a second, and single pulls vary by ±30 %
            # here: five times the repetitions make its median a steady ratio
            self.pull_reps = 5 * self.reps
            self.mem_clients = 64
            self.startup_manifests = 10000
        self.conns = 64
        self.startup_blobs = self.startup_manifests * 5
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.results_dir = os.path.join(self.state, "results", ("smoke-" if self.smoke else "") + stamp)
        os.makedirs(self.results_dir, exist_ok=True)
        self.scratch = args.scratch or self.pick_scratch()
        self.results = {"meta": {}, "scenarios": {}, "errors": {}}
        self.nginx_copied = set()
        self.policy = os.path.join(self.state, "policy.json")
        self.registries_conf = os.path.join(self.state, "registries.conf")
        self.authfile = os.path.join(self.state, "auth.json")

    def pick_scratch(self):
        need = (self.image_herd_n + 2) * (self.sizes["large"] + self.sizes["mid"] + 4 * MIB)
        try:
            st = os.statvfs("/dev/shm")
            if st.f_bavail * st.f_frsize > 2 * need:
                return "/dev/shm/ociregistry-bench"
        except OSError:
            pass
        return os.path.join(self.state, "scratch")

    def setup(self):
        os.makedirs(self.state, exist_ok=True)
        os.makedirs(self.scratch, exist_ok=True)
        with open(self.policy, "w") as f:
            f.write('{"default":[{"type":"insecureAcceptAnything"}]}\n')
        with open(self.registries_conf, "w") as f:
            f.write("unqualified-search-registries = []\n")
        with open(self.authfile, "w") as f:
            f.write('{"auths":{}}\n')
        self.upstream = Upstream(self)
        self.oci = OciRegistry(self)
        self.dist = Distribution(self)
        self.nginx = Nginx(self)
        self.s3 = S3(self)
        self.oci_s3 = OciBucket(self, self.s3)
        self.replicas = Replicas(self, self.s3)
        self.image_root, self.images = make_images(self)
        self.upstream.start()
        log(f"upstream distribution at {self.upstream.url} (log {self.upstream.logf})")
        push_images(self)
        self.results["meta"] = self.machine()

    def teardown(self):
        for s in (self.oci, self.dist, self.nginx, self.oci_s3, self.replicas, self.s3, self.upstream):
            try:
                s.stop()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        shutil.rmtree(self.scratch, ignore_errors=True)

    def wait_quiet(self, limit=90.0):
        """Before a measured run: waits (at most `limit` s) until other work on
        the machine uses less than a quarter of a core over one second."""
        if self.smoke:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            f0 = foreign_cpu()
            time.sleep(1.0)
            if foreign_cpu() - f0 < 0.25:
                break
        waited = time.monotonic() - t0
        self.results["quiet_wait_s"] = self.results.get("quiet_wait_s", 0) + waited
        if waited > 5:
            log(f"    waited {waited:.0f} s for other work on the machine to calm down")

    def mirrors(self, rep):
        """Both mirrors, the order alternating with the repetition."""
        return [self.oci, self.dist] if rep % 2 == 0 else [self.dist, self.oci]

    def blob_url(self, server, image, digest):
        return f"{server.url}{server.repo_path(image)}/blobs/{digest}{server.query()}"

    def manifest_url(self, server, image, ref):
        return f"{server.url}{server.repo_path(image)}/manifests/{ref}{server.query()}"

    def scenario(self, key, fn):
        if self.args.only and key not in self.args.only:
            return
        log(f"=== scenario {key}")
        t0 = time.monotonic()
        f0 = foreign_cpu()
        for s in (self.oci, self.dist, self.oci_s3):
            s.scenario = key
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            log(f"scenario {key} FAILED: {e}")
            traceback.print_exc()
            self.results["errors"][key] = f"{type(e).__name__}: {e}"
        finally:
            for s in (self.oci, self.dist, self.nginx, self.oci_s3, self.replicas):
                s.stop()
            self.results.setdefault("durations", {})[key] = round(time.monotonic() - t0, 1)
            self.results.setdefault("foreign_cpu_s", {})[key] = round(foreign_cpu() - f0, 1)
            log(f"    scenario {key}: {time.monotonic() - t0:.0f} s, CPU used by other work on the "
                f"machine meanwhile: {foreign_cpu() - f0:.1f} s")
            self.save()

    def save(self):
        for s in (self.oci, self.dist):
            self.results.setdefault("peak_rss_kb", {})[s.key] = s.peak_kb
        with open(os.path.join(self.results_dir, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1)

    def check_clients(self, what, ok, total):
        if ok == 0 or (self.smoke and ok < total):
            raise ScenarioFailed(f"{what}: only {ok}/{total} clients succeeded")

    # -- scenario 1 ----------------------------------------------------------
    def s1_herd_blob(self):
        img = self.images["large"]
        digest, size = img["layers"][0]["digest"], img["layers"][0]["size"]
        out = self.results["scenarios"].setdefault("1", {"blob_size": size, "runs": {}})
        self.nginx_files()
        for n in self.herd_ns:
            for rep in range(self.reps):
                for srv in self.mirrors(rep):
                    srv.reset()
                    r = self.herd_curl(srv, "large", digest, size, n)
                    out["runs"].setdefault(str(n), {}).setdefault(srv.key, []).append(r)
                    log(f"  herd blob N={n} {srv.key}: upstream GETs {r['upstream_gets']}, "
                        f"wall {r['wall']:.2f}s, ttfb p50 {r['ttfb_p50']:.3f}s max {r['ttfb_max']:.3f}s, "
                        f"ok {r['ok']}/{n}")
                    srv.stop()
                # the physical floor: nginx sending the same (cached) file to the same herd
                r = self.herd_curl(self.nginx, "large", digest, size, n, url=f"{self.nginx.url}/large")
                out["runs"].setdefault(str(n), {}).setdefault("nginx", []).append(r)
                log(f"  herd blob N={n} nginx (warm file): wall {r['wall']:.2f}s, "
                    f"ttfb p50 {r['ttfb_p50']:.3f}s max {r['ttfb_max']:.3f}s, ok {r['ok']}/{n}")

    def nginx_files(self):
        """nginx serves byte-identical copies of the small and large blobs and the small manifest."""
        os.makedirs(self.nginx.www, exist_ok=True)
        small = self.images["small"]
        for name, digest in (("blob", small["layers"][0]["digest"]), ("manifest", small["manifest"]["digest"]),
                             ("large", self.images["large"]["layers"][0]["digest"])):
            dst = os.path.join(self.nginx.www, name)
            if (name, digest) not in self.nginx_copied:  # the state dir is shared by full and smoke runs
                self.nginx_copied.add((name, digest))
                shutil.copyfile(os.path.join(self.image_root, "blobs", digest.split(":")[1]), dst + ".tmp")
                os.replace(dst + ".tmp", dst)
        if not self.nginx.alive():
            self.nginx.start()

    def herd_curl(self, srv, image, digest, size, n, sample=False, url=None):
        url = url or self.blob_url(srv, image, digest)
        work = os.path.join(self.scratch, f"herd-{srv.key}")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        off = self.upstream.offset()
        self.wait_quiet()
        cpu0 = proc_cpu(srv.pid) if srv.key != "nginx" else None
        sampler = Sampler(srv.pid) if sample else None
        f0 = foreign_cpu()
        cmd = curl_cmd(url)[:-1] + ["-K", "-"]  # the URL comes on stdin at the release
        results, wall = barrier_herd([cmd] * n, work, configs=[f'url = "{url}"\n'.encode()] * n)
        foreign = foreign_cpu() - f0
        rss_max = sampler.stop() if sampler else None
        cpu1 = proc_cpu(srv.pid)
        text = self.upstream.settle(off)
        shutil.rmtree(work, ignore_errors=True)
        parsed = [parse_curl(o) for _, o, _ in results]
        good = [p for p in parsed if p["code"] == 200 and p["size"] == size]
        self.check_clients(f"herd of {n} on {srv.label}", len(good), n)
        ttfbs = sorted(p["ttfb"] for p in good)
        return {
            "ok": len(good), "n": n, "wall": wall,
            "upstream_gets": count_requests(text, "GET", f"/v2/library/{image}/blobs/{digest}"),
            "upstream_heads": count_requests(text, "HEAD", f"/v2/library/{image}/blobs/{digest}"),
            "upstream_requests": count_requests(text),
            "ttfb_p50": statistics.median(ttfbs), "ttfb_max": ttfbs[-1],
            "ttfb_p90": ttfbs[min(len(ttfbs) - 1, int(0.9 * len(ttfbs)))],
            "client_total_max": max(p["total"] for p in good),
            "server_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
            "rss_max_kb": rss_max, "hwm_kb": srv.hwm_kb(), "foreign_cpu_s": foreign,
        }

    # -- scenario 2 ----------------------------------------------------------
    def s2_herd_image(self):
        img = self.images["multilayer"]
        n = self.image_herd_n
        out = self.results["scenarios"].setdefault("2", {
            "image": "multilayer", "blobs": len(img["blobs"]), "n": n,
            "bytes": sum(l["size"] for l in img["layers"]) + img["config"]["size"], "runs": {}})
        for rep in range(self.reps):
            # after the two cold runs, the same herd against ociregistry with the image
            # already in its cache: what the clients alone cost (the floor for any mirror)
            for srv, key in [(m, m.key) for m in self.mirrors(rep)] + [(self.oci, "oci_warm")]:
                if key == "oci_warm":
                    srv.start()
                else:
                    srv.reset()
                work = os.path.join(self.scratch, f"skopeo-{srv.key}")
                shutil.rmtree(work, ignore_errors=True)
                os.makedirs(work)
                cmds = [skopeo_cmd(self, srv.skopeo_ref("multilayer"), os.path.join(work, f"d{i}"))
                        for i in range(n)]
                self.wait_quiet()
                off = self.upstream.offset()
                cpu0 = proc_cpu(srv.pid)
                f0 = foreign_cpu()
                c0 = children_cpu()
                results, wall = barrier_herd(cmds, work)
                clients = children_cpu() - c0
                foreign = foreign_cpu() - f0
                cpu1 = proc_cpu(srv.pid)
                text = self.upstream.settle(off)
                shutil.rmtree(work, ignore_errors=True)
                ok = sum(1 for rc, _, _ in results if rc == 0)
                if ok < n:
                    log(f"  skopeo failures: {[e[-200:] for rc, _, e in results if rc][:3]}")
                self.check_clients(f"{n} x skopeo via {srv.label}", ok, n)
                gets = sum(count_requests(text, "GET", f"/v2/library/multilayer/blobs/{d}") for d in img["blobs"])
                r = {"ok": ok, "n": n, "wall": wall, "upstream_blob_gets": gets,
                     "upstream_blob_heads": sum(count_requests(text, "HEAD", f"/v2/library/multilayer/blobs/{d}")
                                                for d in img["blobs"]),
                     "upstream_requests": count_requests(text),
                     "server_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
                     "clients_cpu_s": clients, "hwm_kb": srv.hwm_kb(), "foreign_cpu_s": foreign}
                out["runs"].setdefault(key, []).append(r)
                log(f"  herd image N={n} {key}: upstream blob GETs {gets} (ideal {len(img['blobs'])}), "
                    f"wall {wall:.2f}s, ok {ok}/{n}")
                srv.stop()

    # -- scenario 3 ----------------------------------------------------------
    def s3_cold_pull(self):
        out = self.results["scenarios"].setdefault("3", {"image": "large", "runs": {}})
        direct = f"docker://127.0.0.1:{self.upstream.port}/library/large:latest"
        for rep in range(self.pull_reps):
            order = ["direct"] + self.mirrors(rep) if rep % 2 == 0 else self.mirrors(rep) + ["direct"]
            for srv in order:
                if srv != "direct":
                    srv.reset()
                ref = direct if srv == "direct" else srv.skopeo_ref("large")
                dest = os.path.join(self.scratch, "pull")
                shutil.rmtree(dest, ignore_errors=True)
                self.wait_quiet()
                mirror_pid = None if srv == "direct" else srv.pid
                cpu0 = [children_cpu(), proc_cpu(self.upstream.pid), proc_cpu(mirror_pid)]
                t0 = time.monotonic()
                r = subprocess.run(skopeo_cmd(self, ref, dest), capture_output=True, text=True, timeout=LIMIT["client"])
                t = time.monotonic() - t0
                cpu = [b - a if a is not None and b is not None else None for a, b in
                       zip(cpu0, [children_cpu(), proc_cpu(self.upstream.pid), proc_cpu(mirror_pid)])]
                shutil.rmtree(dest, ignore_errors=True)
                key = "direct" if srv == "direct" else srv.key
                if r.returncode:
                    raise ScenarioFailed(f"skopeo pull via {key} failed: {r.stderr[-300:]}")
                out["runs"].setdefault(key, []).append(
                    {"time": t, "client_cpu_s": cpu[0], "upstream_cpu_s": cpu[1], "server_cpu_s": cpu[2]})
                log(f"  cold pull {key}: {t:.2f}s")
                if srv != "direct":
                    srv.stop()

    # -- scenario 4 ----------------------------------------------------------
    def s4_ttfb(self):
        img = self.images["huge"]
        digest, size = img["layers"][0]["digest"], img["layers"][0]["size"]
        out = self.results["scenarios"].setdefault("4", {"blob_size": size, "runs": {}})
        for rep in range(self.huge_reps):
            order = ["direct"] + self.mirrors(rep) if rep % 2 == 0 else self.mirrors(rep) + ["direct"]
            for srv in order:
                if srv == "direct":
                    url = f"{self.upstream.url}/v2/library/huge/blobs/{digest}"
                else:
                    srv.reset()
                    url = self.blob_url(srv, "huge", digest)
                self.wait_quiet()
                r = curl_once(url)
                key = "direct" if srv == "direct" else srv.key
                if r["code"] != 200 or r["size"] != size:
                    raise ScenarioFailed(f"cold GET of the {size}-byte blob via {key}: {r}")
                out["runs"].setdefault(key, []).append({"ttfb": r["ttfb"], "total": r["total"]})
                log(f"  ttfb {key}: {r['ttfb'] * 1000:.1f} ms (whole blob {r['total']:.2f}s)")
                if srv != "direct":
                    srv.stop()

    # -- scenarios 5 and 6 ---------------------------------------------------
    def warm_setup(self):
        small = self.images["small"]
        blob = small["layers"][0]
        mdig = small["manifest"]["digest"]
        for srv in (self.oci, self.dist):
            srv.reset()
            for image in ("small", "large"):
                layer = self.images[image]["layers"][0]
                r = curl_once(self.blob_url(srv, image, layer["digest"]))
                if r["code"] != 200 or r["size"] != layer["size"]:
                    raise ScenarioFailed(f"warming the {image} blob on {srv.label}: {r}")
            r = curl_once(self.manifest_url(srv, "small", "latest"), [f"Accept: {ACCEPT}"])
            if r["code"] != 200:
                raise ScenarioFailed(f"warming the manifest on {srv.label}: {r}")
        self.nginx_files()
        time.sleep(1)
        return blob, mdig

    def load(self, key, srv, fn):
        self.wait_quiet()
        off = self.upstream.offset()
        cpu0 = proc_cpu(srv.pid) if srv.key != "nginx" else None
        f0 = foreign_cpu()
        r = fn()
        r["foreign_cpu_s"] = foreign_cpu() - f0
        cpu1 = proc_cpu(srv.pid) if srv.key != "nginx" else None
        r["upstream_requests"] = count_requests(self.upstream.settle(off, quiet=0.5))
        r["server_cpu_s"] = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        if self.smoke and (r["errors"] or not r["requests"]):
            raise ScenarioFailed(f"{key} on {srv.label}: {r['errors']} errors, {r['requests']} requests")
        log(f"  {key} {srv.key}: {r['rps']:.0f} req/s p50 {1000 * (r['p50'] or 0):.2f} ms "
            f"p99 {1000 * (r['p99'] or 0):.2f} ms, errors {r['errors']}, upstream reqs {r['upstream_requests']}")
        return r

    def s5_s6_warm(self):
        blob, mdig = self.warm_setup()
        out5 = self.results["scenarios"].setdefault("5", {"blob_size": blob["size"], "conns": self.conns,
                                                          "dur": self.dur, "runs": {}})
        out6 = self.results["scenarios"].setdefault("6", {"manifest_size": self.images["small"]["manifest"]["size"],
                                                          "conns": self.conns, "dur": self.dur, "runs": {}})
        large = self.images["large"]["layers"][0]
        out5["large_size"] = large["size"]
        for rep in range(self.reps):
            order = self.mirrors(rep) + [self.nginx] if rep % 2 == 0 else [self.nginx] + self.mirrors(rep)
            for image, file, runs in (("small", "blob", "runs"), ("large", "large", "runs_large")):
                layer = self.images[image]["layers"][0]
                for srv in order:
                    if srv is self.nginx:
                        url = f"{srv.url}/{file}"
                    else:
                        url = self.blob_url(srv, image, layer["digest"])
                    r = self.load(f"{size_label_b(layer['size'])} blob GET", srv,
                                  lambda: run_wrk(url, self.conns, self.dur))
                    out5.setdefault(runs, {}).setdefault(srv.key, []).append(r)
            for what in ("tag", "digest"):
                for srv in order:
                    if srv is self.nginx:
                        url = f"{srv.url}/manifest"
                    else:
                        url = self.manifest_url(srv, "small", "latest" if what == "tag" else mdig)
                    r = self.load(f"HEAD by {what}", srv,
                                  lambda: run_hey(url, self.conns, self.dur, "HEAD", ACCEPT))
                    out6["runs"].setdefault(what, {}).setdefault(srv.key, []).append(r)

    # -- scenario 7 ----------------------------------------------------------
    def s7_memory(self):
        """RSS while N clients download a cold blob, for the 100 MiB and the 1 GiB
        blob, a fresh instance each: flat in blob size = the same figure for both."""
        n = self.mem_clients
        out = self.results["scenarios"].setdefault("7", {"n": n, "sizes": {}, "runs": {}})
        for image in ("large", "huge"):
            layer = self.images[image]["layers"][0]
            digest, size = layer["digest"], layer["size"]
            out["sizes"][image] = size
            for srv in self.mirrors(0):
                srv.reset()
                idle = proc_status(srv.pid, "VmRSS")
                r = self.herd_curl(srv, image, digest, size, n, sample=True)
                r["idle_rss_kb"] = idle
                out["runs"].setdefault(image, {}).setdefault(srv.key, []).append(r)
                log(f"  {n} clients x {size // MIB} MiB cold via {srv.key}: RSS max {r['rss_max_kb'] / 1024:.1f} MiB, "
                    f"VmHWM {r['hwm_kb'] / 1024:.1f} MiB, wall {r['wall']:.1f}s, upstream GETs {r['upstream_gets']}")
                srv.stop()

    # -- scenario 9 ----------------------------------------------------------
    def s9_object_storage(self):
        """The object-storage backend beside the filesystem one: a cold herd
        (one replica, and three behind haproxy), warm blob GET, HEAD by tag."""
        if not self.s3.alive():
            self.s3.start()
        large = self.images["large"]["layers"][0]
        small = self.images["small"]
        n = self.herd_ns[1] if len(self.herd_ns) > 1 else self.herd_ns[0]
        out = self.results["scenarios"].setdefault("9", {"blob_size": large["size"], "n": n,
                                                          "conns": self.conns, "dur": self.dur, "runs": {}})
        runs = out["runs"]
        for rep in range(self.reps):
            order = [self.oci, self.oci_s3, self.replicas]
            for srv in order if rep % 2 == 0 else order[::-1]:
                srv.reset()
                r = self.herd_curl(srv, "large", large["digest"], large["size"], n,
                                   sample=srv is not self.replicas)
                runs.setdefault("herd", {}).setdefault(srv.key, []).append(r)
                log(f"  cold herd N={n} {srv.key}: wall {r['wall']:.2f}s, upstream GETs {r['upstream_gets']}, "
                    f"RSS max {(r['rss_max_kb'] or 0) / 1024:.1f} MiB, ok {r['ok']}/{n}")
                srv.stop()
        blob_url = lambda srv: self.blob_url(srv, "small", small["layers"][0]["digest"])  # noqa: E731
        tag_url = lambda srv: self.manifest_url(srv, "small", "latest")  # noqa: E731
        for srv in (self.oci, self.oci_s3):
            srv.reset()
            if curl_once(blob_url(srv))["code"] != 200 or curl_once(tag_url(srv), [f"Accept: {ACCEPT}"])["code"] != 200:
                raise ScenarioFailed(f"warming the small image on {srv.label}")
            for _ in range(self.reps):
                r = self.load("blob GET", srv, lambda: run_wrk(blob_url(srv), self.conns, self.dur))
                runs.setdefault("warm", {}).setdefault(srv.key, []).append(r)
                r = self.load("HEAD by tag", srv,
                              lambda: run_hey(tag_url(srv), self.conns, self.dur, "HEAD", ACCEPT))
                runs.setdefault("head", {}).setdefault(srv.key, []).append(r)
            srv.stop()

    # -- scenario 8 ----------------------------------------------------------
    def make_startup_cache(self):
        m, b = self.startup_manifests, self.startup_blobs
        root = os.path.join(self.state, f"startup-{m}m-{b}b")
        stamp = os.path.join(root, ".complete")
        if os.path.exists(stamp):
            return root
        log(f"generating a cache with {m} manifests and {b} blobs in {root}")
        shutil.rmtree(root, ignore_errors=True)
        bdir = os.path.join(root, "blobs", "sha256")
        mdir = os.path.join(root, "manifests", "sha256")
        os.makedirs(bdir)
        os.makedirs(mdir)
        blobs = []
        for i in range(b):
            data = (f"ociregistry start-up benchmark blob {i}\n" * 4).encode()
            hexd = hashlib.sha256(data).hexdigest()
            with open(os.path.join(bdir, hexd), "wb") as f:
                f.write(data)
            blobs.append({"digest": "sha256:" + hexd, "size": len(data)})
        manifest_lines, tag_lines = [], []
        per = b // m
        for i in range(m):
            own = blobs[i * per:(i + 1) * per]
            body = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, **own[0]},
                "layers": [{"mediaType": OCI_LAYER_TAR, **l} for l in own[1:]],
            }, separators=(",", ":")).encode()
            hexd = hashlib.sha256(body).hexdigest()
            with open(os.path.join(mdir, hexd), "wb") as f:
                f.write(body)
            manifest_lines.append(json.dumps({"kind": "manifest", "digest": "sha256:" + hexd,
                                              "mediaType": OCI_MANIFEST}, separators=(",", ":")))
            tag_lines.append(json.dumps({"kind": "tag", "registry": "docker.io", "repo": f"library/img{i}",
                                         "tag": "v1", "digest": "sha256:" + hexd, "seen": 1700000000},
                                        separators=(",", ":")))
        with open(os.path.join(root, "index.jsonl"), "w") as f:
            f.write("\n".join(manifest_lines + tag_lines) + "\n")
        open(stamp, "w").close()
        return root

    @staticmethod
    def evict(root):
        """Drops the page-cache pages of every file under root (this cache only)."""
        for d, _, files in os.walk(root):
            for name in files:
                try:
                    fd = os.open(os.path.join(d, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)

    # -- scenario 10 ---------------------------------------------------------
    def s10_throttled(self):
        """Cold GET of the huge layer from an upstream that caps every
        connection: straight from it, through ociregistry on one connection,
        and through ociregistry with parallelFetch."""
        img = self.images["huge"]
        digest, size = img["layers"][0]["digest"], img["layers"][0]["size"]
        rate = "4m" if self.smoke else "25m"
        min_size = "1Mi" if self.smoke else "32Mi"
        throttle = Throttle(self, rate)
        throttle.start()
        single = OciRegistry(self)
        single.upstream_url = throttle.url
        parallel = OciRegistry(self)
        parallel.key = "oci_parallel"
        parallel.upstream_url = throttle.url
        parallel.registry_extra = f"    parallelFetch: {{minSize: {min_size}, connections: 8}}\n"
        parallel.dir = os.path.join(self.state, "ociregistry-parallel")
        parallel.cache = os.path.join(parallel.dir, "cache")
        out = self.results["scenarios"].setdefault("10", {"blob_size": size, "rate": rate, "runs": {}})
        try:
            for rep in range(self.reps):
                for srv in ("direct", single, parallel):
                    if srv == "direct":
                        url = f"{throttle.url}/v2/library/huge/blobs/{digest}"
                    else:
                        srv.reset()
                        url = self.blob_url(srv, "huge", digest)
                    self.wait_quiet()
                    sent = throttle.sent_bytes()
                    r = curl_once(url)
                    key = "direct" if srv == "direct" else srv.key
                    if r["code"] != 200 or r["size"] != size:
                        raise ScenarioFailed(f"cold GET of the {size}-byte blob via {key}: {r}")
                    fetched = throttle.sent_bytes() - sent
                    out["runs"].setdefault(key, []).append({"total": r["total"], "upstream_bytes": fetched})
                    log(f"  throttled {rate}/connection, {key}: {r['total']:.2f}s, "
                        f"upstream bytes {fetched / size:.2f}× the blob")
                    if srv != "direct":
                        srv.stop()
        finally:
            for srv in (single, parallel, throttle):
                srv.stop()

    # -- scenario 11 ---------------------------------------------------------
    def s11_client_ranges(self):
        """A cold huge blob through ociregistry, as one GET and as 8
        concurrent `Range` requests covering it (containerd 2.1+ fetches
        large layers this way): wall time of each, and upstream GETs."""
        img = self.images["huge"]
        digest, size = img["layers"][0]["digest"], img["layers"][0]["size"]
        parts = 8
        each = -(-size // parts)
        ranges = [(i * each, min(size, (i + 1) * each) - 1) for i in range(parts)]
        out = self.results["scenarios"].setdefault("11", {"blob_size": size, "parts": parts, "runs": {}})
        srv = self.oci
        for rep in range(self.reps):
            for how in ("full", "ranges"):
                srv.reset()
                url = self.blob_url(srv, "huge", digest)
                self.wait_quiet()
                off = self.upstream.offset()
                t0 = time.monotonic()
                if how == "full":
                    results = [curl_once(url)]
                    want = [size]
                else:
                    procs = [subprocess.Popen(curl_cmd(url, [f"Range: bytes={a}-{b}"]), stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True) for a, b in ranges]
                    results = [parse_curl(p.communicate(timeout=LIMIT["client"] + 60)[0]) for p in procs]
                    want = [b - a + 1 for a, b in ranges]
                wall = time.monotonic() - t0
                gets = count_requests(self.upstream.settle(off, quiet=0.5), method="GET",
                                      path=f"/v2/library/huge/blobs/{digest}")
                for r, n in zip(results, want):
                    if r["code"] not in (200, 206) or r["size"] != n:
                        raise ScenarioFailed(f"cold {how} GET of the huge blob: {r}")
                out["runs"].setdefault(how, []).append({"wall": wall, "upstream_gets": gets})
                log(f"  cold {size_label_b(size)} blob, {how}: {wall:.2f}s, upstream GETs {gets}")
                srv.stop()

    # -- scenario 12 ---------------------------------------------------------
    def s12_fleet(self):
        """`fleet_n` clients (one asyncio process, bench/swarm.py) pulling the
        uncached 5-layer `fleet` image through ociregistry at once, and the
        same swarm pulling the same files from nginx (warm)."""
        img = self.images["fleet"]
        n = self.fleet_n
        size = sum(l["size"] for l in img["layers"]) + img["config"]["size"]
        out = self.results["scenarios"].setdefault("12", {"n": n, "image_size": size,
                                                           "blobs": len(img["blobs"]), "runs": {}})
        www = os.path.join(self.nginx.www, "v2", "library", "fleet")
        for digest, sub in [(img["manifest"]["digest"], "manifests/latest")] + \
                [(d, f"blobs/{d}") for d in img["blobs"]]:
            dst = os.path.join(www, sub)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(self.image_root, "blobs", digest.split(":")[1]), dst)
        if not self.nginx.alive():
            self.nginx.start()
        # 1,000 nodes are 1,000 client addresses; here they share 127.0.0.1
        srv = OciRegistry(self)
        srv.top_extra = f"maxConnectionsPerClient: {4 * n}\n"
        srv.dir = os.path.join(self.state, "ociregistry-fleet")
        srv.cache = os.path.join(srv.dir, "cache")
        swarm = os.path.join(os.path.dirname(os.path.abspath(__file__)), "swarm.py")
        try:
            for rep in range(self.reps):
                for key in ("oci", "nginx"):
                    if key == "oci":
                        srv.reset()
                        port, query, pid = srv.port, srv.query(), srv.pid
                    else:
                        port, query, pid = self.nginx.port, "", None
                    pids = [pid] if pid else self.nginx.worker_pids()
                    self.wait_quiet()
                    off = self.upstream.offset()
                    cpu0, client0 = sum(proc_cpu(p) or 0 for p in pids), children_cpu()
                    sampler = Sampler(pid, fds=True) if pid else None
                    done = subprocess.run(
                        [sys.executable, swarm, "127.0.0.1", str(port), "/v2/library/fleet/manifests/latest",
                         query, str(n), str(LIMIT["client"])],
                        capture_output=True, text=True, timeout=LIMIT["client"] + 60)
                    if sampler:
                        sampler.stop()
                    cpu1 = sum(proc_cpu(p) or 0 for p in pids)
                    if done.returncode != 0:
                        raise ScenarioFailed(f"swarm on {key} failed: {done.stderr[-500:]}")
                    r = json.loads(done.stdout)
                    text = self.upstream.settle(off, quiet=0.5)
                    t = r.pop("ttfb_ms")
                    pick = (lambda q: t[min(len(t) - 1, int(q * len(t)))] / 1000) if t else (lambda q: None)
                    r.update({
                        "ttfb_p50": pick(0.5), "ttfb_p90": pick(0.9), "ttfb_p99": pick(0.99),
                        "ttfb_max": t[-1] / 1000 if t else None, "requests": len(t),
                        "client_cpu_s": children_cpu() - client0,
                        "server_cpu_s": cpu1 - cpu0,
                    })
                    if key == "oci":
                        r.update({
                            "upstream_blob_gets": count_requests(text, "GET", "/v2/library/fleet/blobs/"),
                            "upstream_manifest_gets": count_requests(text, "GET", "/v2/library/fleet/manifests/"),
                            "rss_max_kb": sampler.max_kb, "threads_max": sampler.max_threads,
                            "fds_max": sampler.max_fds,
                        })
                        srv.stop()
                    out["runs"].setdefault(key, []).append(r)
                    log(f"  fleet of {n} on {key}: ok {r['ok']}/{n} (bad {r['bad']}, errors {r['errors']}), "
                        f"wall {r['wall']:.2f}s, ttfb p50 {r['ttfb_p50']}s p99 {r['ttfb_p99']}s "
                        f"max {r['ttfb_max']}s" + (f", upstream blob GETs {r['upstream_blob_gets']}, "
                                                  f"peak RSS {r['rss_max_kb'] / 1024:.1f} MiB, "
                                                  f"threads {r['threads_max']}, fds {r['fds_max']}"
                                                  if key == "oci" else ""))
                    self.check_clients(f"fleet of {n} on {key}", r["ok"], n)
        finally:
            srv.stop()

    def s8_startup(self):
        root = self.make_startup_cache()
        m, b = self.startup_manifests, self.startup_blobs
        out = self.results["scenarios"].setdefault("8", {"manifests": m, "blobs": b, "tags": m, "runs": {}})
        reps = max(self.reps, 3)
        empty = os.path.join(self.state, "startup-empty")
        for rep in range(reps):
            for kind in ("empty", "warm", "evicted"):
                if kind == "empty":
                    shutil.rmtree(empty, ignore_errors=True)
                    path = empty
                else:
                    path = root
                    if kind == "evicted":
                        self.evict(root)
                self.wait_quiet()
                t = self.oci.start(image_path=path)
                if kind != "empty":
                    # the cache is really loaded: a cached tag answers without an upstream
                    url = f"{self.oci.url}/v2/library/img{m - 1}/manifests/v1?ns=docker.io"
                    code = http_status(url, "HEAD", {"Accept": ACCEPT})
                    if code != 200:
                        raise ScenarioFailed(f"cached tag not served after start-up (HTTP {code})")
                self.oci.stop()
                out["runs"].setdefault(kind, []).append({"startup": t})
                log(f"  start-up ({kind}): {t * 1000:.0f} ms")

    # -- machine -------------------------------------------------------------
    def machine(self):
        def sh(cmd):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, shell=isinstance(cmd, str))
                return (r.stdout + r.stderr).strip()
            except Exception:  # noqa: BLE001
                return "n/a"
        info = {}
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                info.setdefault(k.strip(), v.strip())
        cpu = f"{info.get('model name', 'n/a')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}"
        cpu += ", virtual machine)" if "hypervisor" in info.get("flags", "").split() else ")"
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
        commit = sh(["git", "-C", self.repo_root, "rev-parse", "--short", "HEAD"])
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": os.uname().release,
            "os": sh("sed -n 's/^PRETTY_NAME=//p' /etc/os-release").strip('"'),
            "ociregistry": f"{sh([self.binary, '--version'])} ("
                           + (f"commit {self.args.built_from}, " if self.args.built_from else "")
                           + f"{self.binary_src}, built "
                           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(os.path.getmtime(self.binary_src)))}; "
                           f"repository HEAD {commit})",
            "distribution": sh(["docker-registry", "--version"]),
            "nginx": sh(["nginx", "-v"]).replace("nginx version: ", ""),
            "skopeo": sh(["skopeo", "--version"]),
            "curl": sh("curl --version | head -1"),
            "wrk": sh("wrk -v 2>&1 | head -1"),
            "hey": sh("dpkg-query -W -f='${Version}' hey"),
            "python": sys.version.split()[0],
            "scratch": self.scratch,
            "smoke": self.smoke,
            "reps": self.reps, "huge_reps": self.huge_reps, "pull_reps": self.pull_reps,
            "sizes": self.sizes, "herd_ns": self.herd_ns, "image_herd_n": self.image_herd_n,
            "dur": self.dur, "conns": self.conns,
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, N=5, 2 s load runs, 1 repetition")
    ap.add_argument("--runs", type=int, default=0, help="repetitions (default 3; smoke 1)")
    ap.add_argument("--only", type=lambda s: s.split(","), default=None,
                    help="comma-separated scenarios to run: 1,2,3,4,5,7,8,9,10,11,12 (5 includes 6)")
    ap.add_argument("--state", default=os.environ.get("BENCH_STATE", "/tmp/ociregistry-bench"))
    ap.add_argument("--scratch", default=None, help="where skopeo writes its copies (default /dev/shm if large)")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--docs", default=None, help="directory for benchmarks.md and the charts")
    ap.add_argument("--built-from", default=None, help="commit the binary was built from (for the report)")
    ap.add_argument("--previous", type=lambda s: s.split(","), default=None,
                    help="comma-separated results.json files of the previous run, relative to the repository "
                         "(bench/results/...): the report shows their figures beside this run's")
    args = ap.parse_args()

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    global FOREIGN
    FOREIGN = ForeignCpu()
    b = Bench(args)
    if args.previous:
        b.results["previous_files"] = args.previous
    docs = args.docs or (os.path.join(b.results_dir) if args.smoke else os.path.join(b.repo_root, "docs"))
    failed = False
    try:
        b.setup()
        b.scenario("1", b.s1_herd_blob)
        b.scenario("2", b.s2_herd_image)
        b.scenario("3", b.s3_cold_pull)
        b.scenario("4", b.s4_ttfb)
        b.scenario("5", b.s5_s6_warm)
        b.scenario("7", b.s7_memory)
        b.scenario("8", b.s8_startup)
        b.scenario("9", b.s9_object_storage)
        b.scenario("10", b.s10_throttled)
        b.scenario("11", b.s11_client_ranges)
        b.scenario("12", b.s12_fleet)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        b.results["errors"]["setup"] = f"{type(e).__name__}: {e}"
    except KeyboardInterrupt:
        log("interrupted: stopping every server")
        b.teardown()
        return 130
    finally:
        b.teardown()
        b.save()
    failed = bool(b.results["errors"])
    try:
        md = report.write(b.results, docs, smoke=args.smoke)
        log(f"report: {md}")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        log(f"report FAILED: {e}")
        failed = True
    log(f"raw results: {b.results_dir}/results.json")
    if failed:
        log(f"FAILED to run: {', '.join(b.results['errors']) or 'report'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
